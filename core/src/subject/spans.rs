//! The spans of a request's hops through the Subject, recorded without
//! I/O: the core writes down when each began and ended (from its [`Now`])
//! and the ids it chose, and its shell hands each finished
//! [`SpanRecord`] to the exporter (`crate::telemetry::Sink`). Only with
//! [`SubjectOptions::record_spans`] (an exporter is installed), and only
//! for a request whose trace context is sampled: otherwise nothing here
//! runs but one test of a flag per hop.
//!
//! The spans, all in the request's trace:
//! - `intake`: from the request's arrival at the node (read from its
//!   socket, or handed over by the HTTP gateway) to its acceptance;
//! - `queue`: from when it became ready for a worker (accepted, back from
//!   a worker with more to do, answered at an `@ASYNC` step, redelivered,
//!   out of a retry delay) to its dispatch;
//! - `dispatch`: from its dispatch to its result from the worker (or the
//!   loss of the worker). The worker's `action` spans are its children:
//!   the `WORK` envelope's `traceparent` carries its id as parent-id, the
//!   trace id and flags kept (and `tracestate`), and the result's context
//!   is put back to the request's own when it comes back;
//! - `async_wait`: waiting at an `@ASYNC` step, or at a step given to a
//!   service, until its answer (or `async_timeout`).
//!
//! The shell adds `publish` (a result or publication handed to the
//! Integration Manager). Every one of these is a child of the request's
//! parent: the span its `traceparent` names. When the node started the
//! trace (the request came without a valid one), that parent-id is its
//! `intake` span's own, which is the trace's root.
//!
//! [`Now`]: super::core::Now
//! [`SubjectOptions::record_spans`]: super::core::SubjectOptions::record_spans

use std::collections::HashMap;

use crate::inflight::{MessageKey, key_of};
use crate::wire::envelope::Envelope;
use crate::wire::trace_context::{Adopted, TraceParent};

/// A finished span of the Subject's, with the ids and times it chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRecord {
    /// `intake`, `queue`, `dispatch`, `async_wait` or `publish`.
    pub name: &'static str,
    pub trace_id: u128,
    pub span_id: u64,
    /// `None`: a root.
    pub parent_id: Option<u64>,
    /// The parent is another process's (the service's).
    pub parent_is_remote: bool,
    /// Microseconds since the Unix epoch.
    pub start_us: u64,
    pub end_us: u64,
    pub flow: String,
    /// The request's id and its service's.
    pub id: String,
    pub service: String,
    /// The step it is at (and its key), and the attempt, where one applies.
    pub step: Option<u32>,
    pub key: String,
    pub attempt: Option<u32>,
    /// The worker process a `dispatch` went to.
    pub worker_pid: Option<u32>,
    /// Other attributes (`zmanager.owner`, `zmanager.topic`...).
    pub extra: Vec<(&'static str, String)>,
    /// The span ended in failure: why.
    pub error: Option<String>,
}

/// What is open for one request.
#[derive(Debug)]
struct Trail {
    trace_id: u128,
    flags: u8,
    flow: String,
    /// The parent of the node's spans.
    parent: u64,
    parent_is_remote: bool,
    /// Since when it has waited for a worker.
    since_us: u64,
    dispatch: Option<Open>,
    wait: Option<Open>,
}

/// A span begun and not ended.
#[derive(Debug)]
struct Open {
    span_id: u64,
    start_us: u64,
    step: u32,
    key: String,
    attempt: u32,
    worker_pid: Option<u32>,
    owner: Option<String>,
}

/// The open spans of live requests, and the finished ones not yet handed
/// to the shell.
#[derive(Debug, Default)]
pub(super) struct SpanBook {
    trails: HashMap<MessageKey, Trail>,
    done: Vec<SpanRecord>,
}

/// A fresh span id (never zero). Random means spread evenly, as
/// [`TraceParent::start`]'s.
fn span_id() -> u64 {
    fastrand::u64(1..)
}

impl Trail {
    /// A trail for a message met without one (recovered from the journal):
    /// its context's parent is the parent of its spans.
    fn of(envelope: &Envelope, since_us: u64) -> Option<Self> {
        let parent = TraceParent::parse(&envelope.traceparent)?;
        (parent.flags & TraceParent::SAMPLED != 0).then(|| Self {
            trace_id: parent.trace_id,
            flags: parent.flags,
            flow: envelope.flow.clone(),
            parent: parent.parent_id,
            parent_is_remote: true,
            since_us,
            dispatch: None,
            wait: None,
        })
    }

    fn span(
        &self,
        key: &MessageKey,
        name: &'static str,
        span_id: u64,
        start_us: u64,
        end_us: u64,
    ) -> SpanRecord {
        SpanRecord {
            name,
            trace_id: self.trace_id,
            span_id,
            parent_id: Some(self.parent),
            parent_is_remote: self.parent_is_remote,
            start_us,
            end_us: end_us.max(start_us),
            flow: self.flow.clone(),
            id: key.1.clone(),
            service: key.0.clone(),
            step: None,
            key: String::new(),
            attempt: None,
            worker_pid: None,
            extra: Vec::new(),
            error: None,
        }
    }

    fn close(
        &self,
        key: &MessageKey,
        name: &'static str,
        open: Open,
        end_us: u64,
        error: Option<&str>,
    ) -> SpanRecord {
        let mut span = self.span(key, name, open.span_id, open.start_us, end_us);
        span.step = Some(open.step);
        span.key = open.key;
        span.attempt = Some(open.attempt);
        span.worker_pid = open.worker_pid;
        if let Some(owner) = open.owner {
            span.extra.push(("zmanager.owner", owner));
        }
        span.error = error.map(str::to_owned);
        span
    }
}

impl SpanBook {
    /// Requests with open spans.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.trails.len()
    }

    /// The requests with open spans.
    #[cfg(test)]
    pub(super) fn keys(&self) -> impl Iterator<Item = &MessageKey> {
        self.trails.keys()
    }

    /// The spans finished since the last call, for the shell to export.
    pub(super) fn finished(&mut self) -> std::vec::Drain<'_, SpanRecord> {
        self.done.drain(..)
    }

    /// A request was accepted at `now_us`, having arrived at `arrived_us`
    /// (0: not known, as now); `adopted`: what intake did with its trace
    /// context.
    pub(super) fn accepted(
        &mut self,
        envelope: &Envelope,
        adopted: Adopted,
        arrived_us: u64,
        now_us: u64,
    ) {
        let Some(mut trail) = Trail::of(envelope, now_us) else {
            return;
        };
        let key = key_of(envelope);
        let started = matches!(adopted, Adopted::Started | Adopted::Replaced);
        let start_us = if arrived_us == 0 {
            now_us
        } else {
            arrived_us.min(now_us)
        };
        let intake = if started {
            // The node's own trace: its intake span is the root, and the
            // parent the request's context names.
            trail.parent_is_remote = false;
            let mut span = trail.span(&key, "intake", trail.parent, start_us, now_us);
            span.parent_id = None;
            span
        } else {
            trail.span(&key, "intake", span_id(), start_us, now_us)
        };
        self.done.push(intake);
        self.trails.insert(key, trail);
    }

    /// The message goes to a worker (process `worker_pid`) at `now_us`:
    /// its wait in the queue ends, its dispatch begins, and its context is
    /// rewritten to name the dispatch as the parent of the worker's spans.
    pub(super) fn dispatched(
        &mut self,
        envelope: &mut Envelope,
        worker_pid: Option<u32>,
        now_us: u64,
    ) {
        let key = key_of(envelope);
        if !self.trails.contains_key(&key) {
            let Some(trail) = Trail::of(envelope, now_us) else {
                return;
            };
            self.trails.insert(key.clone(), trail);
        }
        let Some(trail) = self.trails.get_mut(&key) else {
            return;
        };
        if let Some(open) = trail.dispatch.take() {
            let again = "dispatched again before its result";
            self.done
                .push(trail.close(&key, "dispatch", open, now_us, Some(again)));
        }
        let mut queue = trail.span(&key, "queue", span_id(), trail.since_us, now_us);
        queue.step = Some(envelope.step);
        queue.key.clone_from(&envelope.key);
        queue.attempt = Some(envelope.attempt);
        self.done.push(queue);
        let dispatch = Open {
            span_id: span_id(),
            start_us: now_us,
            step: envelope.step,
            key: envelope.key.clone(),
            attempt: envelope.attempt,
            worker_pid,
            owner: None,
        };
        envelope.traceparent = TraceParent {
            trace_id: trail.trace_id,
            parent_id: dispatch.span_id,
            flags: trail.flags,
        }
        .to_string();
        trail.dispatch = Some(dispatch);
    }

    /// The worker's result for `key` came back at `now_us` (`error`: it is
    /// an error result); or the worker was lost, `error` saying how. From
    /// now on the message waits for what comes next.
    pub(super) fn returned(&mut self, key: &MessageKey, error: Option<&str>, now_us: u64) {
        let Some(trail) = self.trails.get_mut(key) else {
            return;
        };
        trail.since_us = now_us;
        if let Some(open) = trail.dispatch.take() {
            self.done
                .push(trail.close(key, "dispatch", open, now_us, error));
        }
    }

    /// The message waits at step `step` (an `@ASYNC` step, or one given to
    /// service `owner`) from `now_us`.
    pub(super) fn waiting(&mut self, envelope: &Envelope, owner: Option<&str>, now_us: u64) {
        let key = key_of(envelope);
        if !self.trails.contains_key(&key) {
            let Some(trail) = Trail::of(envelope, now_us) else {
                return;
            };
            self.trails.insert(key.clone(), trail);
        }
        let Some(trail) = self.trails.get_mut(&key) else {
            return;
        };
        trail.wait = Some(Open {
            span_id: span_id(),
            start_us: now_us,
            step: envelope.step,
            key: envelope.key.clone(),
            attempt: envelope.attempt,
            worker_pid: None,
            owner: owner.map(str::to_owned),
        });
    }

    /// Its wait ended at `now_us`: answered, or (`error`) not in time.
    pub(super) fn answered(&mut self, key: &MessageKey, error: Option<&str>, now_us: u64) {
        let Some(trail) = self.trails.get_mut(key) else {
            return;
        };
        trail.since_us = now_us;
        if let Some(open) = trail.wait.take() {
            self.done
                .push(trail.close(key, "async_wait", open, now_us, error));
        }
    }

    /// The request ended: what is still open ends with it.
    pub(super) fn ended(&mut self, key: &MessageKey, now_us: u64) {
        let Some(mut trail) = self.trails.remove(key) else {
            return;
        };
        let why = Some("the request ended first");
        if let Some(open) = trail.dispatch.take() {
            self.done
                .push(trail.close(key, "dispatch", open, now_us, why));
        }
        if let Some(open) = trail.wait.take() {
            self.done
                .push(trail.close(key, "async_wait", open, now_us, why));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIVEN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn envelope(traceparent: &str) -> Envelope {
        let mut e = Envelope::request("m1", "Greeting");
        e.service = "s".into();
        e.traceparent = traceparent.into();
        e.step = 1;
        e.key = "?Greeting?trim".into();
        e
    }

    #[test]
    fn a_given_parent_is_the_parent_of_every_span_and_the_worker_gets_the_dispatch() {
        let mut book = SpanBook::default();
        let mut e = envelope(GIVEN);
        book.accepted(&e, Adopted::Kept, 90, 100);
        book.dispatched(&mut e, Some(7), 150);
        let given = TraceParent::parse(GIVEN).unwrap();
        let sent = TraceParent::parse(&e.traceparent).unwrap();
        assert_eq!((sent.trace_id, sent.flags), (given.trace_id, given.flags));
        book.returned(&key_of(&e), None, 300);
        book.ended(&key_of(&e), 310);
        let spans: Vec<SpanRecord> = book.finished().collect();
        let names: Vec<&str> = spans.iter().map(|s| s.name).collect();
        assert_eq!(names, ["intake", "queue", "dispatch"]);
        for span in &spans {
            assert_eq!(span.trace_id, given.trace_id);
            assert_eq!(span.parent_id, Some(given.parent_id), "{span:?}");
            assert!(span.parent_is_remote);
        }
        let times: Vec<(u64, u64)> = spans.iter().map(|s| (s.start_us, s.end_us)).collect();
        assert_eq!(times, [(90, 100), (100, 150), (150, 300)]);
        assert_eq!(spans[2].span_id, sent.parent_id, "the worker's parent");
        assert_eq!(spans[2].worker_pid, Some(7));
        assert_eq!(book.len(), 0);
    }

    #[test]
    fn a_trace_the_node_started_has_its_intake_span_as_the_root() {
        let mut book = SpanBook::default();
        let started = TraceParent::start();
        let e = envelope(&started.to_string());
        book.accepted(&e, Adopted::Started, 0, 100);
        book.waiting(&e, None, 120);
        book.answered(&key_of(&e), Some("async_timeout"), 200);
        book.ended(&key_of(&e), 200);
        let spans: Vec<SpanRecord> = book.finished().collect();
        assert_eq!(spans[0].name, "intake");
        assert_eq!(
            (spans[0].span_id, spans[0].parent_id),
            (started.parent_id, None)
        );
        assert_eq!(spans[0].start_us, 100, "arrival unknown: at acceptance");
        assert_eq!(spans[1].name, "async_wait");
        assert_eq!(spans[1].parent_id, Some(started.parent_id));
        assert!(!spans[1].parent_is_remote);
        assert_eq!(spans[1].error.as_deref(), Some("async_timeout"));
    }

    #[test]
    fn nothing_is_recorded_without_a_sampled_context() {
        let mut book = SpanBook::default();
        for traceparent in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        ] {
            let mut e = envelope(traceparent);
            book.accepted(&e, Adopted::Kept, 0, 1);
            book.dispatched(&mut e, None, 2);
            assert_eq!(e.traceparent, traceparent, "not rewritten");
        }
        assert_eq!((book.len(), book.finished().count()), (0, 0));
    }

    #[test]
    fn what_is_open_when_a_request_ends_ends_with_it() {
        let mut book = SpanBook::default();
        let mut e = envelope(GIVEN);
        book.accepted(&e, Adopted::Kept, 0, 1);
        book.dispatched(&mut e, None, 2);
        book.ended(&key_of(&e), 5);
        let last = book.finished().next_back().unwrap();
        assert_eq!((last.name, last.end_us), ("dispatch", 5));
        assert!(last.error.is_some());
    }
}
