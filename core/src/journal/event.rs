//! What the journal records: one event per step of a message's life.

use std::sync::Arc;

use crate::inflight::{MessageKey, WorkerId, key_of};
use crate::wire::Message;

/// One step of a message's life, with when it happened (microseconds since
/// the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The Subject took the request (envelope and payload as accepted).
    Accepted { at_us: u64, message: Message },
    /// The message was sent to a worker.
    Dispatched {
        at_us: u64,
        key: MessageKey,
        attempt: u32,
        worker: WorkerId,
    },
    /// The flow stopped at an `@ASYNC` step; `message` is its state there.
    Suspended {
        at_us: u64,
        key: MessageKey,
        step: u32,
        message: Message,
    },
    /// The answer to a suspended flow came; `message` is the flow's state
    /// as it goes on after its `@ASYNC` step `step` (the answer's payload).
    Resumed {
        at_us: u64,
        key: MessageKey,
        step: u32,
        message: Message,
    },
    /// The message's flow finished; `result` is what was published for it
    /// when a duplicate of it gets that result again (`None` when a request
    /// sent again is taken again: a refusal after acceptance). Shared
    /// with what is published and remembered for duplicates, not copied.
    Completed {
        at_us: u64,
        key: MessageKey,
        result: Option<Arc<Message>>,
    },
    /// The message went to the dead-letter store.
    DeadLettered {
        at_us: u64,
        key: MessageKey,
        reason: String,
    },
}

/// The kind of an [`Event`], as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Accepted,
    Dispatched,
    Suspended,
    Resumed,
    Completed,
    DeadLettered,
}

impl EventKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Dispatched => "dispatched",
            Self::Suspended => "suspended",
            Self::Resumed => "resumed",
            Self::Completed => "completed",
            Self::DeadLettered => "dead_lettered",
        }
    }

    /// The kind named `name`, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "accepted" => Self::Accepted,
            "dispatched" => Self::Dispatched,
            "suspended" => Self::Suspended,
            "resumed" => Self::Resumed,
            "completed" => Self::Completed,
            "dead_lettered" => Self::DeadLettered,
            _ => return None,
        })
    }
}

impl Event {
    /// A request accepted now-ish (at `at_us`).
    pub fn accepted(at_us: u64, message: Message) -> Self {
        Self::Accepted { at_us, message }
    }

    pub fn kind(&self) -> EventKind {
        match self {
            Self::Accepted { .. } => EventKind::Accepted,
            Self::Dispatched { .. } => EventKind::Dispatched,
            Self::Suspended { .. } => EventKind::Suspended,
            Self::Resumed { .. } => EventKind::Resumed,
            Self::Completed { .. } => EventKind::Completed,
            Self::DeadLettered { .. } => EventKind::DeadLettered,
        }
    }

    pub fn at_us(&self) -> u64 {
        match self {
            Self::Accepted { at_us, .. }
            | Self::Dispatched { at_us, .. }
            | Self::Suspended { at_us, .. }
            | Self::Resumed { at_us, .. }
            | Self::Completed { at_us, .. }
            | Self::DeadLettered { at_us, .. } => *at_us,
        }
    }

    /// The message the event is about, borrowed: `(service, id)`.
    pub fn key_str(&self) -> (&str, &str) {
        match self {
            Self::Accepted { message, .. } => (&message.envelope.service, &message.envelope.id),
            Self::Dispatched { key, .. }
            | Self::Suspended { key, .. }
            | Self::Resumed { key, .. }
            | Self::Completed { key, .. }
            | Self::DeadLettered { key, .. } => (&key.0, &key.1),
        }
    }

    /// The message the event is about.
    pub fn key(&self) -> MessageKey {
        match self {
            Self::Accepted { message, .. } => key_of(&message.envelope),
            Self::Dispatched { key, .. }
            | Self::Suspended { key, .. }
            | Self::Resumed { key, .. }
            | Self::Completed { key, .. }
            | Self::DeadLettered { key, .. } => key.clone(),
        }
    }
}

/// An event as read back, with its position in the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Its number: events are numbered in the order they were appended.
    pub seq: i64,
    pub event: Event,
}

/// Where an unfinished message's flow stands, by its latest checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    /// Accepted (and maybe dispatched): the flow runs again from its entry.
    Accepted,
    /// Waiting at the `@ASYNC` step `envelope.step` for its answer.
    Suspended,
    /// Answered at the `@ASYNC` step `envelope.step`: the flow goes on
    /// after it.
    Resumed,
}

/// An accepted message neither completed nor dead-lettered, as recovery
/// finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    /// The message as at its checkpoint, with the attempt of its latest
    /// dispatch after it.
    pub message: Message,
    pub at: Checkpoint,
}
