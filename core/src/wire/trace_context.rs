//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>) in the
//! envelope: its `traceparent` and `tracestate` keys, what a valid
//! `traceparent` is, and what the Subject does with them at intake.
//!
//! A request carries the trace context its service gave it, or one the
//! node starts for it; every message of its flow then carries that context
//! unchanged: the work its workers receive (and the results they return),
//! its `@PUBLISH` publications, the steps given to services, its result.
//! With spans recorded (`crate::subject::SpanRecord`), only the parent-id of
//! its work changes: it names the node's `dispatch` span.
//! `docs/protocol.md` (§3, "Trace context") is the reference for clients.
//!
//! At intake ([`adopt`], on a `request`):
//! - a valid `traceparent` is kept as given (one of a later version than
//!   `00`, which W3C asks to read by its first four fields, is written as
//!   version `00`: the version this node speaks), with its `tracestate`
//!   bounded ([`bound_tracestate`]);
//! - a malformed one is not an error (W3C: ignore it and start a new
//!   trace): it is dropped with its `tracestate`; with `[telemetry]
//!   start_traces` on, the request then gets a new trace context, as one
//!   that carries none does: a random trace-id and parent-id, flags `01`
//!   (sampled). Off (the default), it goes on without: a context costs
//!   bytes on every hop. `[telemetry] otlp_endpoint` turns it on (a span
//!   needs a trace);
//! - a `tracestate` without a valid `traceparent` is dropped (W3C: it is
//!   not read without one).
//!
//! On any other message but a ping (which goes back untouched), a malformed
//! `traceparent` is dropped with its `tracestate` ([`drop_malformed`]): what
//! the node publishes carries a valid one or none.

use std::fmt;

use crate::wire::envelope::Envelope;

/// The most characters of `tracestate` kept: the 512 W3C requires every
/// vendor to propagate. A longer one loses whole list-members, never part
/// of one ([`bound_tracestate`]).
pub const TRACESTATE_MAX: usize = 512;

/// List-members longer than this are the first dropped from a `tracestate`
/// past [`TRACESTATE_MAX`] (W3C's rule).
pub const TRACESTATE_MEMBER_MAX: usize = 128;

/// The length of a version-`00` `traceparent`.
const TRACEPARENT_LEN: usize = 55;

/// The parts of a valid `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16 bytes, never all zero.
    pub trace_id: u128,
    /// The caller's span: 8 bytes, never all zero.
    pub parent_id: u64,
    /// Trace flags: bit 0 is "sampled".
    pub flags: u8,
}

impl TraceParent {
    /// The "sampled" flag.
    pub const SAMPLED: u8 = 0x01;

    /// Reads a `traceparent` header as W3C Trace Context level 1 says:
    /// `version-traceid-parentid-flags`, lowercase hex; version `ff`, an
    /// all-zero trace-id or parent-id, or a version-`00` header of any
    /// length but 55 are invalid. A later version is read by its first 55
    /// characters, which must be followed by nothing or a `-`.
    pub fn parse(header: &str) -> Option<Self> {
        let b = header.as_bytes();
        if b.len() < TRACEPARENT_LEN || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let version = hex(&b[..2])?;
        let fits = match version {
            0x00 => b.len() == TRACEPARENT_LEN,
            0xff => false,
            _ => b.len() == TRACEPARENT_LEN || b[TRACEPARENT_LEN] == b'-',
        };
        let parsed = Self {
            trace_id: hex(&b[3..35])?,
            parent_id: u64::try_from(hex(&b[36..52])?).ok()?,
            flags: u8::try_from(hex(&b[53..55])?).ok()?,
        };
        (fits && parsed.trace_id != 0 && parsed.parent_id != 0).then_some(parsed)
    }

    /// A new trace: a random trace-id and parent-id (never zero), sampled.
    /// Random means spread evenly, not secret: `fastrand`, seeded per
    /// thread.
    pub fn start() -> Self {
        Self {
            trace_id: fastrand::u128(1..),
            parent_id: fastrand::u64(1..),
            flags: Self::SAMPLED,
        }
    }
}

/// The `traceparent` header, version `00`.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

/// Lowercase hex digits (at most 32) as a number; `None` for any other
/// character.
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |n, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some((n << 4) | u128::from(v))
    })
}

/// What [`adopt`] did with a request's trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    /// Its valid `traceparent` is kept.
    Kept,
    /// It had none: a new trace was started.
    Started,
    /// Its `traceparent` was malformed: dropped with its `tracestate`, and
    /// a new trace started.
    Replaced,
    /// It has none, and none was started (`start` off); a malformed one
    /// was dropped.
    Without,
}

/// Gives a request the trace context it keeps through its flow (see the
/// module's documentation); `start`: a request without a valid one gets a
/// new one (`[telemetry] start_traces`), else it goes on without.
pub fn adopt(envelope: &mut Envelope, start: bool) -> Adopted {
    // Parsed once: this runs on every request.
    let Some(parent) = TraceParent::parse(&envelope.traceparent) else {
        let malformed = !envelope.traceparent.is_empty();
        envelope.tracestate.clear();
        if !start {
            envelope.traceparent.clear();
            return Adopted::Without;
        }
        envelope.traceparent = TraceParent::start().to_string();
        return if malformed {
            Adopted::Replaced
        } else {
            Adopted::Started
        };
    };
    if !envelope.traceparent.starts_with("00-") {
        envelope.traceparent = parent.to_string();
    }
    bound_tracestate(&mut envelope.tracestate);
    Adopted::Kept
}

/// Drops a malformed `traceparent`, and then its `tracestate`, and a
/// `tracestate` without a `traceparent`; true when it dropped anything.
pub fn drop_malformed(envelope: &mut Envelope) -> bool {
    let malformed =
        !envelope.traceparent.is_empty() && TraceParent::parse(&envelope.traceparent).is_none();
    if malformed {
        envelope.traceparent.clear();
    }
    let orphan = envelope.traceparent.is_empty() && !envelope.tracestate.is_empty();
    if orphan {
        envelope.tracestate.clear();
    }
    malformed || orphan
}

/// Keeps a `tracestate` of at most [`TRACESTATE_MAX`] characters as it
/// is. A longer one loses whole list-members as W3C says: those longer
/// than [`TRACESTATE_MEMBER_MAX`] first (the rightmost first), then from
/// the right, until it fits; the members left are joined by `,` without
/// the spaces around them.
pub fn bound_tracestate(state: &mut String) {
    if state.len() <= TRACESTATE_MAX {
        return;
    }
    let mut members: Vec<&str> = state
        .split(',')
        .map(|m| m.trim_matches([' ', '\t']))
        .filter(|m| !m.is_empty())
        .collect();
    // The length joined: the members and a comma between each two.
    let joined = |members: &[&str]| {
        members.iter().map(|m| m.len()).sum::<usize>() + members.len().saturating_sub(1)
    };
    while joined(&members) > TRACESTATE_MAX {
        match members
            .iter()
            .rposition(|m| m.len() > TRACESTATE_MEMBER_MAX)
        {
            Some(long) => members.remove(long),
            None => members.pop().unwrap_or_default(),
        };
    }
    *state = members.join(",");
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_the_w3c_example() {
        let parent = TraceParent::parse(VALID).expect("valid");
        assert_eq!(parent.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(parent.parent_id, 0x00f067aa0ba902b7);
        assert_eq!(parent.flags, TraceParent::SAMPLED);
        assert_eq!(parent.to_string(), VALID);
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert_eq!(TraceParent::parse(unsampled).map(|p| p.flags), Some(0));
    }

    #[test]
    fn refuses_what_w3c_calls_invalid() {
        for bad in [
            "",
            "00",
            "garbage",
            // Uppercase hex, a wrong separator, a short or long field.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            // All-zero ids, version ff, a version 00 with more after it.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            // A sign where a digit should be (`from_str_radix` takes one).
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // A later version: more must follow a dash.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_fields() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-adds";
        assert_eq!(TraceParent::parse(later), TraceParent::parse(VALID));
        let mut e = Envelope::request("m", "F");
        e.traceparent = later.into();
        e.tracestate = "a=1".into();
        assert_eq!(adopt(&mut e, true), Adopted::Kept);
        assert_eq!(
            (e.traceparent.as_str(), e.tracestate.as_str()),
            (VALID, "a=1")
        );
    }

    #[test]
    fn new_traces_are_valid_sampled_and_differ() {
        let a = TraceParent::start();
        let b = TraceParent::start();
        assert_ne!(a.trace_id, b.trace_id);
        assert_eq!(a.flags, TraceParent::SAMPLED);
        let header = a.to_string();
        assert_eq!(header.len(), 55);
        assert_eq!(TraceParent::parse(&header), Some(a));
        // Small ids keep their leading zeros.
        let small = TraceParent {
            trace_id: 1,
            parent_id: 2,
            flags: 3,
        };
        assert_eq!(
            small.to_string(),
            "00-00000000000000000000000000000001-0000000000000002-03"
        );
    }

    #[test]
    fn a_request_keeps_a_valid_context_and_gets_one_otherwise() {
        let mut e = Envelope::request("m", "F");
        e.traceparent = VALID.into();
        e.tracestate = "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7".into();
        let before = e.clone();
        assert_eq!(adopt(&mut e, true), Adopted::Kept);
        assert_eq!(e, before, "kept as given");

        let mut none = Envelope::request("m", "F");
        none.tracestate = "orphan=1".into();
        assert_eq!(adopt(&mut none, true), Adopted::Started);
        assert!(TraceParent::parse(&none.traceparent).is_some());
        assert!(
            none.tracestate.is_empty(),
            "no tracestate without its parent"
        );

        let mut bad = Envelope::request("m", "F");
        bad.traceparent = "00-nope".into();
        bad.tracestate = "congo=t61rcWkgMzE".into();
        assert_eq!(adopt(&mut bad, true), Adopted::Replaced);
        let parent = TraceParent::parse(&bad.traceparent).expect("a new, valid one");
        assert_eq!(parent.flags, TraceParent::SAMPLED);
        assert!(bad.tracestate.is_empty(), "dropped with its traceparent");
        assert_ne!(bad.traceparent, none.traceparent, "each its own trace");

        // Without `start_traces`: kept when valid, dropped when not, none
        // started.
        let mut kept = before.clone();
        assert_eq!(adopt(&mut kept, false), Adopted::Kept);
        assert_eq!(kept, before);
        let mut bad = Envelope::request("m", "F");
        bad.traceparent = "00-nope".into();
        bad.tracestate = "congo=t61rcWkgMzE".into();
        assert_eq!(adopt(&mut bad, false), Adopted::Without);
        assert!(bad.traceparent.is_empty() && bad.tracestate.is_empty());
    }

    #[test]
    fn other_messages_lose_only_a_malformed_context() {
        let mut e = Envelope::request("m", "F");
        e.traceparent = VALID.into();
        e.tracestate = "a=1".into();
        assert!(!drop_malformed(&mut e));
        assert_eq!(
            (e.traceparent.as_str(), e.tracestate.as_str()),
            (VALID, "a=1")
        );
        e.traceparent = "00-nope".into();
        assert!(drop_malformed(&mut e));
        assert!(e.traceparent.is_empty() && e.tracestate.is_empty());
        let mut orphan = Envelope::request("m", "F");
        orphan.tracestate = "a=1".into();
        assert!(drop_malformed(&mut orphan));
        assert!(orphan.tracestate.is_empty());
        let mut none = Envelope::request("m", "F");
        assert!(!drop_malformed(&mut none));
    }

    #[test]
    fn a_tracestate_within_512_characters_is_kept_as_given() {
        let prefix = " a=1 ,, b=";
        let mut state = format!("{prefix}{}", "x".repeat(TRACESTATE_MAX - prefix.len()));
        assert_eq!(state.len(), TRACESTATE_MAX);
        let before = state.clone();
        bound_tracestate(&mut state);
        assert_eq!(state, before);
    }

    #[test]
    fn a_longer_tracestate_loses_long_members_first_then_the_last() {
        // 20 members of 24 characters (`kNN=` and 20 digits): 499 joined.
        let member = |i: usize| format!("k{i:02}={}", "1".repeat(20));
        let members: Vec<String> = (0..20).map(member).collect();
        let long = format!("big={}", "y".repeat(200));
        // A long member in the middle pushes it past 512: it goes, and
        // everything else stays, in order.
        let mut state = [&members[..10], std::slice::from_ref(&long), &members[10..]]
            .concat()
            .join(",");
        bound_tracestate(&mut state);
        assert_eq!(state, members.join(","));
        // Past 512 with no long member: the rightmost go.
        let mut state = (0..30).map(member).collect::<Vec<_>>().join(" , ");
        bound_tracestate(&mut state);
        assert_eq!(state, members.join(","), "the first 20 fit in 512");
        assert!(state.len() <= TRACESTATE_MAX);
        // One member alone past 512: nothing is left.
        let mut state = format!("a={}", "z".repeat(600));
        bound_tracestate(&mut state);
        assert_eq!(state, "");
    }
}
