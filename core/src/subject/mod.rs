//! The Subject (DigitalPy's ventilator): takes requests from services, works
//! out each one's next flow step, dispatches work to the workers, and sees
//! every accepted request through to a result or to the dead-letter store.
//!
//! It is a state machine without I/O ([`SubjectCore`]) in a thin shell
//! ([`run`]) that owns the sockets, the clock and the journal writer: the
//! shell carries each [`Input`] in and carries out each [`Effect`], and does
//! nothing else. The model test (`model.rs`) drives the core through random
//! interleavings of everything that can happen and checks its promises
//! after every step.
//!
//! Inside, one concept a file:
//! - `core`: the state, its inputs and effects, one turn of the loop;
//! - `intake`: a service's message: checks, duplicates, acceptance;
//! - `steps`: moving a message along its flow, the ordering gate;
//! - `suspended`: flows waiting at `@ASYNC` steps for their answer;
//! - `service_steps`: steps given to services, sent by their outboxes;
//! - `durables`: durable subscriptions, kept and delivered each turn;
//! - `attempts`: failed attempts, redelivery, retry delays, dead letters;
//! - `outcome`: every way a message ends;
//! - `commits`: what waits for the journal (acknowledgements, keys);
//! - `workers`: worker messages, liveness, dispatch;
//! - `recovery`: taking up what the journal had unfinished at start-up;
//! - `spans`: the spans of each request's hops, recorded for the shell
//!   to export (with an exporter only);
//! - `asks`: what the HTTP server asks of it between turns;
//! - `shell`: the sockets, tasks and timers around the core.
//!
//! Reliability (`docs/reliability.md` states the promise):
//! - a worker that disconnects, stops heartbeating (`liveness`), or holds a
//!   message past `message_timeout` is lost: its messages are sent again
//!   elsewhere with `attempt + 1`, and a hung process is killed;
//! - an action that panics is retried the same way;
//! - after `max_attempts` deliveries a message is dead-lettered: stored with
//!   the reason of every attempt, published on `@deadletter~<flow>~`, and
//!   answered with an error result;
//! - an action with a retry policy (`retry`) that fails waits its delay in
//!   the delay queue, not on a worker, and runs again from the failed step;
//!   its last failure, or an error kind the policy does not retry, goes to
//!   the dead-letter store;
//! - in an ordered flow, a request waits in the key gate (`ordering`) until
//!   every earlier request with its key has ended;
//! - a request pushed again while in flight is absorbed; within
//!   `dedupe_window` after it finished, its result is published again;
//! - on drain (SIGTERM) intake stops and the loop runs until nothing is in
//!   flight or `drain_timeout` passes.
//!
//! Journal: each step of an accepted message's life is recorded —
//! accepted, dispatched, suspended, resumed, completed, dead-lettered — and
//! appended once per turn of the loop (group commit); a request that asked
//! for `ack` is acknowledged only after its acceptance is committed. At
//! start-up the unfinished messages the journal hands over are taken up
//! again before any new request.
//!
//! Backpressure: when the pending queue is full the loop stops taking from
//! the intake channel; the intake task then blocks, and ZeroMQ's TCP flow
//! control pushes back on the services.

mod asks;
mod attempts;
mod commits;
mod core;
mod durables;
mod intake;
#[cfg(test)]
mod model;
mod outcome;
mod recovery;
mod service_steps;
mod shell;
mod spans;
mod stats;
mod steps;
mod suspended;
mod workers;

pub use self::asks::{Ask, Whereabouts};
pub use self::core::{Counters, Effect, Input, Now, SubjectCore, SubjectOptions};
pub use self::shell::{Links, run};
pub use self::spans::SpanRecord;
pub use self::stats::{FlowStats, LATENCY_BOUNDS_US, Stats, StepStats, WorkerStats};

use crate::catalog::topic::Topic;
use crate::wire::envelope::Envelope;

/// The topic dead letters of `flow` are published on.
pub fn dead_letter_topic(flow: &str) -> String {
    format!("@deadletter~{flow}~")
}

/// The topic a result is published on: the request's `reply_to`, or the
/// flow's results topic.
pub fn result_topic(envelope: &Envelope) -> String {
    if envelope.reply_to.is_empty() {
        Topic::results(&envelope.flow).to_string()
    } else {
        envelope.reply_to.clone()
    }
}
