//! The log: `tracing` events on stderr, filtered by `RUST_LOG` (default
//! `info`), as text — colored on a terminal unless `NO_COLOR` is set — or,
//! with `--log-format json` or `ZMANAGER_LOG_FORMAT=json`, one JSON object
//! a line.
//!
//! The node's worker processes (and the processes `zmanager bench`
//! starts) are `zmanager` too, and take their format from
//! `ZMANAGER_LOG_FORMAT`, which the process that starts them sets: see
//! [`child_env`].
//!
//! Traces: given an [`Exporter`] (`zmanager up` with `[telemetry]
//! otlp_endpoint`, `zmanager worker --otlp-endpoint`), the subscriber has a
//! second layer, `tracing-opentelemetry`'s, which passes on only the spans
//! of [`zmanager::telemetry::TARGET`] (a worker's `action` spans) to the
//! exporter [`zmanager::telemetry::Telemetry`] installs. `RUST_LOG`
//! filters the log, not that layer. Without one, the subscriber is the
//! log alone.

use std::ffi::OsString;

use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use zmanager::telemetry::Telemetry;

/// The variable the format is read from when `--log-format` is not given.
pub(crate) const FORMAT_VAR: &str = "ZMANAGER_LOG_FORMAT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// For people: `2026-12-01T10:00:00.000000Z  INFO target: message
    /// field=value`.
    #[default]
    Text,
    /// For log collectors: one object a line, `{"timestamp", "level",
    /// "fields": {"message", ...the event's fields}, "target"}`, and the
    /// spans the event is in (`"span"`, `"spans"`).
    Json,
}

impl LogFormat {
    fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// Where this process exports its spans.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exporter<'a> {
    /// `[telemetry] otlp_endpoint`.
    pub(crate) endpoint: &'a str,
    pub(crate) service_name: &'a str,
    /// `node` or `worker`: the `zmanager.role` of its resource.
    pub(crate) role: &'a str,
}

/// Installs the global subscriber on stderr, and with `exporter` the
/// exporter of spans, which exports what is left when the returned value
/// is dropped.
pub(crate) fn init(
    format: LogFormat,
    exporter: Option<Exporter<'_>>,
) -> anyhow::Result<Option<Telemetry>> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log = match format {
        LogFormat::Text => log
            .with_ansi(colored(
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
                std::env::var_os("NO_COLOR"),
            ))
            .boxed(),
        LogFormat::Json => log.json().with_ansi(false).boxed(),
    };
    let telemetry = exporter
        .map(|e| Telemetry::install(e.endpoint, e.service_name, e.role))
        .transpose()?;
    let traces = telemetry.as_ref().map(|telemetry| {
        tracing_opentelemetry::layer()
            .with_tracer(telemetry.tracer())
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(zmanager::telemetry::TARGET, tracing::Level::TRACE),
            )
    });
    tracing_subscriber::registry()
        .with(log.with_filter(filter))
        .with(traces)
        .init();
    Ok(telemetry)
}

/// Whether the log is colored: on a terminal, unless `NO_COLOR` is set to
/// anything but the empty string (no-color.org).
pub(crate) fn colored(terminal: bool, no_color: Option<OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// What to set on the processes this one starts (a node's workers, the
/// benchmark's processes) so that they log in `format`: they read
/// `ZMANAGER_LOG_FORMAT` when no `--log-format` is given.
pub(crate) fn child_env(format: LogFormat) -> Vec<(String, String)> {
    vec![(FORMAT_VAR.to_owned(), format.name().to_owned())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_turns_the_colors_off() {
        assert!(colored(true, None));
        assert!(!colored(true, Some("1".into())));
        assert!(colored(true, Some("".into())), "empty: as if unset");
        assert!(!colored(false, None), "not a terminal");
    }
}
