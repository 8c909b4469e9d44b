//! Traces out of the process: an OpenTelemetry exporter over OTLP/HTTP
//! (protobuf), installed when `[telemetry] otlp_endpoint` is set, and
//! nothing at all otherwise (`docs/observability.md`, "Traces").
//!
//! [`Telemetry::install`] makes one batch span processor (the SDK's: a
//! thread of its own that exports every `OTEL_BSP_SCHEDULE_DELAY`, 5 s by
//! default, and on shutdown) in front of an OTLP exporter that posts with
//! a blocking `ureq` client (`http.rs`), and a tracer provider over it.
//! Two kinds of spans reach that one processor:
//! - spans made with `tracing` at target [`TARGET`] (a worker's `action`
//!   spans, `crate::worker::executor`), through the `tracing-opentelemetry`
//!   layer the binary installs with [`Telemetry::tracer`];
//! - spans the Subject recorded, each with the ids and times it chose
//!   ([`crate::subject::SpanRecord`]), handed over finished by
//!   [`Sink::record`]: a span that lasts from one turn of the Subject's
//!   loop to another, whose id must be known before it ends (it goes to the
//!   worker as the parent of its actions), is not a scope a `tracing` span
//!   can cover, and the SDK's tracer chooses span ids itself.

mod http;

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanEvents, SpanLinks,
    SpanProcessor,
};

use crate::subject::SpanRecord;
use crate::wire::trace_context::TraceParent;

/// The `tracing` target of the spans exported (the layer passes no other).
pub const TARGET: &str = "zmanager::trace";

/// The path OTLP/HTTP takes traces on, added to the endpoint.
const TRACES_PATH: &str = "/v1/traces";

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no exporter could be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    #[error("telemetry.otlp_endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The URL spans are posted to for `endpoint` (`http://host:port`, the
/// collector's base, as `OTEL_EXPORTER_OTLP_ENDPOINT` is written): with
/// `/v1/traces` added. Only `http://`: no TLS client is built in.
pub fn traces_url(endpoint: &str) -> Result<String, String> {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return Err(if endpoint.starts_with("https://") {
            "https is not supported (no TLS client is built in): export to a collector on this machine or a trusted network over http://".to_owned()
        } else {
            "use http://host:port, such as \"http://127.0.0.1:4318\"".to_owned()
        });
    };
    let (authority, _) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() || authority.contains(char::is_whitespace) {
        return Err("no host: use http://host:port, such as \"http://127.0.0.1:4318\"".to_owned());
    }
    let base = endpoint.trim_end_matches('/');
    let url = format!("{base}{TRACES_PATH}");
    url.parse::<ureq::http::Uri>()
        .map_err(|e| format!("not a URL: {e}"))?;
    Ok(url)
}

/// The installed exporter; dropping it exports what is still queued and
/// stops the processor's thread.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// What the Subject's shell hands its finished spans to.
#[derive(Debug, Clone)]
pub struct Sink {
    processor: Arc<BatchSpanProcessor>,
    scope: InstrumentationScope,
}

/// The sink of the exporter this process installed, if it did.
static SINK: OnceLock<Sink> = OnceLock::new();

impl Telemetry {
    /// Installs an exporter to `endpoint` (see [`traces_url`]) for the
    /// spans of this process, a `role` (`node`, `worker`) of service
    /// `service_name`. Once per process: a second call returns an error
    /// only if the first did; its spans go to the first one's exporter.
    pub fn install(endpoint: &str, service_name: &str, role: &str) -> Result<Self, TelemetryError> {
        let url = traces_url(endpoint).map_err(|reason| TelemetryError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason,
        })?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(http::Ureq::new(EXPORT_TIMEOUT))
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        let pid = std::process::id();
        let resource = Resource::builder()
            .with_service_name(service_name.to_owned())
            .with_attributes([
                KeyValue::new("process.pid", i64::from(pid)),
                KeyValue::new("service.instance.id", format!("{role}-{pid}")),
                KeyValue::new("zmanager.role", role.to_owned()),
            ])
            .build();
        // The SDK's thread-based processor: `OTEL_BSP_*` tune it.
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        processor.set_resource(&resource);
        let processor = Arc::new(processor);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Shared(Arc::clone(&processor)))
            .with_resource(resource)
            .build();
        let scope = InstrumentationScope::builder("zmanager")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let _ = SINK.set(Sink { processor, scope });
        Ok(Self { provider })
    }

    /// The tracer of the `tracing-opentelemetry` layer.
    pub fn tracer(&self) -> SdkTracer {
        use opentelemetry::trace::TracerProvider as _;
        self.provider.tracer("zmanager")
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // Exports what is queued (blocking, bounded by the export timeout).
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "exporting the last spans failed");
        }
    }
}

/// The sink of the exporter installed in this process ([`Telemetry`]),
/// `None` when none was.
pub fn installed() -> Option<Sink> {
    SINK.get().cloned()
}

impl Sink {
    /// Exports a span the Subject recorded.
    pub fn record(&self, record: &SpanRecord) {
        let mut attributes = vec![
            KeyValue::new("zmanager.flow", record.flow.clone()),
            KeyValue::new("zmanager.message_id", record.id.clone()),
            KeyValue::new("zmanager.service", record.service.clone()),
        ];
        if let Some(step) = record.step {
            attributes.push(KeyValue::new("zmanager.step", i64::from(step)));
        }
        if !record.key.is_empty() {
            attributes.push(KeyValue::new("zmanager.key", record.key.clone()));
        }
        if let Some(attempt) = record.attempt {
            attributes.push(KeyValue::new("zmanager.attempt", i64::from(attempt)));
        }
        if let Some(pid) = record.worker_pid {
            attributes.push(KeyValue::new("zmanager.worker.pid", i64::from(pid)));
        }
        for (key, value) in &record.extra {
            attributes.push(KeyValue::new(*key, value.clone()));
        }
        let status = match &record.error {
            Some(error) => Status::error(error.clone()),
            None => Status::Unset,
        };
        self.processor.on_end(SpanData {
            span_context: SpanContext::new(
                TraceId::from(record.trace_id),
                SpanId::from(record.span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: record.parent_id.map_or(SpanId::INVALID, SpanId::from),
            parent_span_is_remote: record.parent_is_remote,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(record.name),
            start_time: time(record.start_us),
            end_time: time(record.end_us.max(record.start_us)),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        });
    }
}

/// A time recorded as microseconds since the Unix epoch.
fn time(us: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us)
}

/// The context a span of a worker continues: `traceparent`'s, as a remote
/// parent (its `tracestate` is the node's to carry, not the spans').
pub fn remote_parent(parent: &TraceParent) -> Context {
    let flags = if parent.flags & TraceParent::SAMPLED != 0 {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from(parent.trace_id),
        SpanId::from(parent.parent_id),
        flags,
        true,
        TraceState::default(),
    ))
}

/// The provider's view of the one processor [`Sink`] feeds too.
#[derive(Debug)]
struct Shared(Arc<BatchSpanProcessor>);

impl SpanProcessor for Shared {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    // The resource was set on the processor before it was shared.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_to_an_http_endpoint() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").as_deref(),
            Ok("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            traces_url("http://collector:4318/").as_deref(),
            Ok("http://collector:4318/v1/traces")
        );
        assert!(traces_url("https://collector:4318").is_err());
        assert!(traces_url("127.0.0.1:4318").is_err());
        assert!(traces_url("http://").is_err());
    }
}
