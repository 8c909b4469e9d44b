//! Running a message through its flow: what a worker does with each message.
//!
//! Starting at the message's step, the executor calls each step's component
//! action, feeding each response into the next step as its request, until a
//! step that is not a component action (`done`, `@PUBLISH`, `@ASYNC`, a
//! service's step) or the end of the flow. The message comes back as a
//! result at the step where it stopped — or as an error result at the step
//! that failed. Panics are caught; nothing here panics on input.
//!
//! Traced ([`Executor::traced`], when the process exports spans), each
//! action of a message whose trace context is sampled runs in an `action`
//! span (a `tracing` span at [`crate::telemetry::TARGET`], exported by the
//! `tracing-opentelemetry` layer): a child of the span its work's
//! `traceparent` names (the node's `dispatch` span), with the flow, the
//! step and its key, the component action and the attempt. Untraced, no
//! span is made.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use zmanager_sdk::{Context, ErrorKind, Request, panic_message};

use crate::catalog::action_key::ActionKey;
use crate::catalog::{Catalog, StepRole};
use crate::components::registry::Registry;
use crate::wire::Message;
use crate::wire::catalogs::{Offer, Serves};
use crate::wire::envelope::Kind;
use crate::wire::error_code::ErrorCode;
use crate::wire::trace_context::TraceParent;

/// Runs messages through flows with the components of a registry (linked
/// and loaded), each on the catalog version it was accepted under.
#[derive(Debug, Clone)]
pub struct Executor {
    book: Book,
    traced: bool,
}

/// The catalog versions a worker knows (`docs/reload.md`): its own, read
/// at start, and those the Subject offered it, by number. Shared between
/// the socket task, which takes offers, and the action thread.
#[derive(Debug, Clone)]
pub struct Book {
    /// Its own catalog and that catalog's digest (empty: not known, as in
    /// tests that build a catalog in memory).
    own: (String, Arc<Catalog>),
    versions: Arc<RwLock<HashMap<u32, Arc<Catalog>>>>,
    registry: Registry,
}

impl Book {
    /// The digests of the catalogs it has (what `READY` lists).
    pub fn digests(&self) -> Vec<String> {
        let (digest, _) = &self.own;
        if digest.is_empty() {
            Vec::new()
        } else {
            vec![digest.clone()]
        }
    }

    /// Takes `offer`: the version is its own catalog (same digest), or the
    /// catalog its files build, if they build without error with this
    /// worker's components. Says what it can run now.
    pub fn accept(&self, offer: Offer) -> Serves {
        let version = offer.version;
        let catalog = if offer.digest == self.own.0 && !offer.digest.is_empty() {
            Ok(Arc::clone(&self.own.1))
        } else if let Some(sources) = offer.sources {
            let (catalog, mut diagnostics) = sources.build();
            self.registry.check(&catalog, &mut diagnostics);
            if diagnostics.has_errors() {
                Err(diagnostics.to_string())
            } else {
                Ok(Arc::new(catalog))
            }
        } else {
            Err(format!(
                "offered without its files, and this worker's own catalog is another ({})",
                self.own.0
            ))
        };
        let mut versions = self
            .versions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut serves = Serves::default();
        match catalog {
            Ok(catalog) => {
                versions.insert(version, catalog);
            }
            Err(why) => serves.refused.push((version, why)),
        }
        serves.versions = versions.keys().copied().collect();
        serves.versions.sort_unstable();
        serves
    }

    /// The catalog of version `number` (`0`: its own).
    fn get(&self, number: u32) -> Option<Arc<Catalog>> {
        if number == 0 {
            return Some(Arc::clone(&self.own.1));
        }
        self.versions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&number)
            .cloned()
    }
}

impl Executor {
    pub fn new(catalog: Arc<Catalog>, registry: Registry) -> Self {
        Self {
            book: Book {
                own: (String::new(), catalog),
                versions: Arc::default(),
                registry,
            },
            traced: false,
        }
    }

    /// Its own catalog is the one of `digest` ([`Sources::digest`](crate::catalog::version::Sources::digest)).
    #[must_use]
    pub fn with_digest(mut self, digest: String) -> Self {
        self.book.own.0 = digest;
        self
    }

    /// The versions it knows, to take the Subject's offers into.
    pub fn book(&self) -> Book {
        self.book.clone()
    }

    /// Runs each action of a sampled message in an `action` span (see the
    /// module's documentation).
    #[must_use]
    pub fn traced(mut self, traced: bool) -> Self {
        self.traced = traced;
        self
    }

    /// Runs `message` from its step until the flow leaves the worker.
    pub fn run(&self, message: Message) -> Message {
        let Message {
            mut envelope,
            mut payload,
        } = message;
        envelope.kind = Kind::Result;
        let Some(catalog) = self.book.get(envelope.catalog) else {
            let text = format!(
                "this worker was not told of catalog version {}",
                envelope.catalog
            );
            return Message::new(envelope.into_error(ErrorCode::UnknownFlow, text), payload);
        };
        let Some(routed) = catalog.flow(&envelope.flow) else {
            let text = format!("this worker has no flow {:?}", envelope.flow);
            return Message::new(envelope.into_error(ErrorCode::UnknownFlow, text), payload);
        };
        let mut step = usize::try_from(envelope.step).unwrap_or(usize::MAX);
        // Parsed once a message, and only when traced.
        let parent = if self.traced {
            TraceParent::parse(&envelope.traceparent)
                .filter(|p| p.flags & TraceParent::SAMPLED != 0)
        } else {
            None
        };
        while let (Some(flow_step), Some((StepRole::Action(target), _))) =
            (routed.flow.steps.get(step), routed.roles.get(step))
        {
            envelope.step = u32::try_from(step).unwrap_or(u32::MAX);
            set_key(&mut envelope.key, &flow_step.key);
            let key = &envelope.key;
            let Some(component) = self.book.registry.get(&target.component) else {
                let text = format!(
                    "`{key}` maps to {target}, but no component {} is linked or loaded",
                    target.component
                );
                return Message::new(envelope.into_error(ErrorCode::NoMapping, text), payload);
            };
            let request = Request {
                payload: &payload,
                context: Context {
                    message_id: &envelope.id,
                    flow: &envelope.flow,
                    key,
                    service: &envelope.service,
                    attempt: envelope.attempt,
                },
            };
            let span =
                parent.map(|parent| action_span(&parent, &request.context, target, envelope.step));
            let _entered = span.as_ref().map(tracing::Span::enter);
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                component.call(&target.action, &request)
            }));
            if let (Some(span), Some(failure)) = (&span, failure(&outcome)) {
                span.record("otel.status_code", "error");
                span.record("otel.status_description", failure);
            }
            match outcome {
                Ok(Ok(response)) => payload = Bytes::from(response),
                // A dynamic component's panic, caught in its library: the
                // same result as a linked component's (below).
                Ok(Err(error)) if error.kind == ErrorKind::Panicked => {
                    let text = format!("{target} at `{key}` panicked: {}", error.message);
                    return Message::new(
                        envelope.into_error(ErrorCode::ActionPanicked, text),
                        payload,
                    );
                }
                Ok(Err(error)) => {
                    // The step is the result's `key`: said once, by whoever
                    // prints the error with it.
                    let text = format!("{target}: {}", error.message);
                    return Message::new(envelope.into_error(error.kind.into(), text), payload);
                }
                Err(panic) => {
                    let text = format!("{target} at `{key}` panicked: {}", panic_message(&*panic));
                    return Message::new(
                        envelope.into_error(ErrorCode::ActionPanicked, text),
                        payload,
                    );
                }
            }
            step += 1;
        }
        envelope.step = u32::try_from(step).unwrap_or(u32::MAX);
        match routed.flow.steps.get(step) {
            Some(s) => set_key(&mut envelope.key, &s.key),
            None => envelope.key.clear(),
        }
        Message::new(envelope, payload)
    }
}

/// The `action` span of `target` run for `context`, a child of `parent`.
fn action_span(
    parent: &TraceParent,
    context: &Context<'_>,
    target: &crate::catalog::mapping::Target,
    step: u32,
) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let span = tracing::info_span!(
        target: crate::telemetry::TARGET,
        "action",
        zmanager.flow = context.flow,
        zmanager.key = context.key,
        zmanager.step = step,
        zmanager.action = %target,
        zmanager.attempt = context.attempt,
        zmanager.message_id = context.message_id,
        zmanager.service = context.service,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    // Without the layer (a library's own subscriber), the span is only a
    // `tracing` span.
    let _ = span.set_parent(crate::telemetry::remote_parent(parent));
    span
}

/// What failed, if the action did.
fn failure(
    outcome: &std::thread::Result<Result<Vec<u8>, zmanager_sdk::ActionError>>,
) -> Option<&str> {
    match outcome {
        Ok(Ok(_)) => None,
        Ok(Err(error)) => Some(&error.message),
        Err(_) => Some("panicked"),
    }
}

/// Writes `key` into `into`, reusing its buffer.
fn set_key(into: &mut String, key: &ActionKey) {
    use std::fmt::Write as _;
    into.clear();
    // Writing to a String cannot fail.
    let _ = write!(into, "{key}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::source::{Format, SourceFile};
    use crate::wire::envelope::{Envelope, Status};

    fn executor() -> Executor {
        let flows = [SourceFile::new(
            "f.ini",
            "[Greeting]\n?Greeting?Push\n?Greeting?trim\n?Greeting?greet\n?Greeting?upper\n??done\n\
             [Boom]\n?Boom?Push\n?Boom?echo\n?Boom?panic\n??done\n\
             [Fail]\n?Fail?Push\n?Fail?fail\n\
             [Open]\n?Open?Push\n?Open?echo\n",
            Format::Ini,
        )];
        let maps = [SourceFile::new(
            "m.ini",
            "[actionmapping]\n?Greeting?trim = Text.trim\n?Greeting?upper = Text.upper\n\
             ?Greeting?greet = Greeter.greet\n??echo = Probe.echo\n??panic = Probe.panic\n??fail = Probe.fail\n",
            Format::Ini,
        )];
        let (catalog, d) = Catalog::build(&flows, &maps);
        assert!(!d.has_errors(), "{d}");
        Executor::new(Arc::new(catalog), Registry::linked())
    }

    fn at_step_one(flow: &str, payload: &impl serde::Serialize) -> Message {
        let mut e = Envelope::request("m1", flow);
        e.step = 1;
        e.attempt = 1;
        Message::new(e, Bytes::from(rmp_serde::to_vec_named(payload).unwrap()))
    }

    #[derive(serde::Serialize)]
    struct Person {
        name: &'static str,
    }

    #[test]
    fn runs_every_action_step_and_stops_at_done() {
        let out = executor().run(at_step_one("Greeting", &Person { name: "  ada " }));
        assert_eq!(out.envelope.status, Status::Ok, "{:?}", out.envelope.error);
        assert_eq!(
            (out.envelope.step, out.envelope.key.as_str()),
            (4, "??done")
        );
        let value: rmpv::Value = rmp_serde::from_slice(&out.payload).unwrap();
        assert_eq!(value.to_string(), r#"{"greeting": "HELLO, ADA!"}"#);
    }

    #[test]
    fn a_flow_without_done_ends_after_its_last_step() {
        let out = executor().run(at_step_one("Open", &1u8));
        assert_eq!(out.envelope.status, Status::Ok);
        assert_eq!((out.envelope.step, out.envelope.key.as_str()), (2, ""));
    }

    #[test]
    fn errors_and_panics_become_error_results_at_their_step() {
        let out = executor().run(at_step_one("Fail", &1u8));
        let error = out.envelope.error.unwrap();
        assert_eq!(error.code, ErrorCode::ActionFailed);
        assert_eq!(out.envelope.key, "?Fail?fail");

        let out = executor().run(at_step_one("Boom", &1u8));
        let error = out.envelope.error.unwrap();
        assert_eq!(error.code, ErrorCode::ActionPanicked);
        assert!(
            error.message.contains("panicking on purpose"),
            "{}",
            error.message
        );
        assert_eq!(out.envelope.step, 2);
    }

    #[test]
    fn a_payload_that_does_not_decode_is_a_bad_request() {
        let out = executor().run(at_step_one("Greeting", &42u32));
        let error = out.envelope.error.unwrap();
        assert_eq!(error.code, ErrorCode::BadRequest);
        assert_eq!(out.envelope.key, "?Greeting?greet");
    }

    /// A result, an error result too, carries the trace context of the work
    /// it answers: the Subject goes on with the worker's envelope.
    #[test]
    fn results_keep_the_trace_context_of_their_work() {
        for flow in ["Greeting", "Fail", "Boom", "Nope"] {
            let mut work = at_step_one(flow, &Person { name: "ada" });
            work.envelope.traceparent =
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into();
            work.envelope.tracestate = "congo=t61rcWkgMzE".into();
            let out = executor().run(work.clone());
            assert_eq!(
                (out.envelope.traceparent, out.envelope.tracestate),
                (work.envelope.traceparent, work.envelope.tracestate),
                "{flow}"
            );
        }
    }

    #[test]
    fn an_unknown_flow_is_an_error_result() {
        let out = executor().run(at_step_one("Nope", &1u8));
        assert_eq!(out.envelope.error.unwrap().code, ErrorCode::UnknownFlow);
    }
}
