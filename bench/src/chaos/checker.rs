//! The checker: every result against the request that produced it, in the
//! manner of Jepsen's `total-queue`, without I/O. The rules (also in
//! `docs/chaos.md`):
//!
//! - **lost**: a request sent (and sent again while unanswered) that never
//!   got a result by the end of the run;
//! - **duplicated**: an id that got more results than it was sent, or a
//!   result that differs from the id's first (status, error code or
//!   payload). A copy for a request sent again is the node answering that
//!   send (`republished`), not a duplicate;
//! - **unexpected**: a result for an id this run never sent;
//! - **errors**: first results with status `error`, by error code name;
//! - **out of order** (ordered flows): per ordering key, among requests
//!   sent exactly once (so accepted in the order sent), a first result
//!   that comes after the first result of a later request of its key.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use serde::Serialize;

/// What is known of one request.
#[derive(Debug, Clone, Default)]
struct Request {
    sends: u32,
    accepted: bool,
    results: u32,
    /// The first result's digest.
    first: Option<u64>,
    /// Copies that differ from the first.
    differing: u32,
    /// Its ordering key, for an ordered flow.
    key: Option<String>,
}

/// A result, as the checker compares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest(u64);

impl Digest {
    /// Of a result's status, error code and payload bytes.
    pub fn of(ok: bool, code: Option<u16>, payload: &[u8]) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (ok, code, payload).hash(&mut h);
        Self(h.finish())
    }
}

/// What a result was, for the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The request's first result.
    First,
    /// Another copy.
    Again,
    /// Not a request of this run.
    Unexpected,
}

/// Tracks requests `0..total`, named `<prefix><seq>`.
#[derive(Debug)]
pub struct Checker {
    prefix: String,
    requests: Vec<Request>,
    answered: u64,
    accepted: u64,
    unexpected: u64,
    errors: BTreeMap<String, u64>,
    ordered: bool,
    /// Per key, the highest sequence number answered among requests sent
    /// once.
    last_of_key: HashMap<String, u64>,
    out_of_order: u64,
}

/// The checker's counts at the end of a run.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Requests (ids) sent.
    pub sent: u64,
    /// Sends in all, with those sent again.
    pub sends: u64,
    /// Sends beyond the first of an id.
    pub resent: u64,
    /// Ids acknowledged (`accepted`).
    pub accepted: u64,
    /// Ids with at least one result.
    pub answered: u64,
    pub lost: u64,
    /// Ids with a duplicated result (see the module's rules).
    pub duplicated: u64,
    /// Copies of results for ids sent more than once, within the sends.
    pub republished: u64,
    pub unexpected: u64,
    /// First results with status ok.
    pub ok: u64,
    /// First error results by code name.
    pub errors: BTreeMap<String, u64>,
    /// `None` for a flow that is not ordered.
    pub out_of_order: Option<u64>,
    /// A few lost and duplicated ids, to look up (`zmanager journal show`).
    pub lost_ids: Vec<String>,
    pub duplicated_ids: Vec<String>,
}

/// At most this many ids are listed per kind.
const LISTED: usize = 20;

impl Checker {
    /// `ordered`: check the order per key (set each request's key with
    /// [`Checker::sent`]).
    pub fn new(prefix: &str, total: u64, ordered: bool) -> Self {
        Self {
            prefix: prefix.to_owned(),
            requests: vec![Request::default(); usize::try_from(total).unwrap_or(0)],
            answered: 0,
            accepted: 0,
            unexpected: 0,
            errors: BTreeMap::new(),
            ordered,
            last_of_key: HashMap::new(),
            out_of_order: 0,
        }
    }

    /// The id of request `seq`.
    pub fn id(&self, seq: u64) -> String {
        format!("{}{seq}", self.prefix)
    }

    /// The request `id` names, if it is one of this run's.
    pub fn seq_of(&self, id: &str) -> Option<u64> {
        let seq: u64 = id.strip_prefix(&self.prefix)?.parse().ok()?;
        (seq < self.requests.len() as u64).then_some(seq)
    }

    fn get(&mut self, seq: u64) -> Option<&mut Request> {
        self.requests.get_mut(usize::try_from(seq).ok()?)
    }

    /// Request `seq` was sent (again), with ordering key `key`.
    pub fn sent(&mut self, seq: u64, key: Option<String>) {
        if let Some(r) = self.get(seq) {
            r.sends += 1;
            if r.key.is_none() {
                r.key = key;
            }
        }
    }

    /// The node acknowledged `id`.
    pub fn accepted(&mut self, id: &str) {
        let Some(seq) = self.seq_of(id) else { return };
        if let Some(r) = self.get(seq)
            && !r.accepted
        {
            r.accepted = true;
            self.accepted += 1;
        }
    }

    /// Whether request `seq` was acknowledged or answered.
    pub fn is_accepted(&self, seq: u64) -> bool {
        self.requests
            .get(usize::try_from(seq).unwrap_or(usize::MAX))
            .is_some_and(|r| r.accepted || r.results > 0)
    }

    /// Whether request `seq` has its result.
    pub fn is_answered(&self, seq: u64) -> bool {
        self.requests
            .get(usize::try_from(seq).unwrap_or(usize::MAX))
            .is_some_and(|r| r.results > 0)
    }

    /// A result for `id`: its digest, and its error code name when it is
    /// an error.
    pub fn result(&mut self, id: &str, digest: Digest, error: Option<&str>) -> Seen {
        let Some(seq) = self.seq_of(id) else {
            self.unexpected += 1;
            return Seen::Unexpected;
        };
        let ordered = self.ordered;
        let Some(r) = self.get(seq) else {
            return Seen::Unexpected;
        };
        if r.sends == 0 {
            self.unexpected += 1;
            return Seen::Unexpected;
        }
        r.results += 1;
        if let Some(first) = r.first {
            if first != digest.0 {
                r.differing += 1;
            }
            return Seen::Again;
        }
        r.first = Some(digest.0);
        let key = (ordered && r.sends == 1).then(|| r.key.clone()).flatten();
        self.answered += 1;
        if let Some(code) = error {
            *self.errors.entry(code.to_owned()).or_default() += 1;
        }
        if let Some(key) = key {
            let last = self.last_of_key.entry(key).or_insert(seq);
            if *last > seq {
                self.out_of_order += 1;
            } else {
                *last = seq;
            }
        }
        Seen::First
    }

    /// Requests answered so far.
    pub fn answered(&self) -> u64 {
        self.answered
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            accepted: self.accepted,
            answered: self.answered,
            unexpected: self.unexpected,
            out_of_order: self.ordered.then_some(self.out_of_order),
            ..Counts::default()
        };
        for (seq, r) in self.requests.iter().enumerate() {
            if r.sends == 0 {
                continue;
            }
            c.sent += 1;
            c.sends += u64::from(r.sends);
            c.resent += u64::from(r.sends - 1);
            if r.results == 0 {
                c.lost += 1;
                if c.lost_ids.len() < LISTED {
                    c.lost_ids.push(self.id(seq as u64));
                }
                continue;
            }
            let over = r.results.saturating_sub(r.sends);
            if over > 0 || r.differing > 0 {
                c.duplicated += 1;
                if c.duplicated_ids.len() < LISTED {
                    c.duplicated_ids.push(self.id(seq as u64));
                }
            }
            c.republished += u64::from((r.results.min(r.sends) - 1).saturating_sub(r.differing));
        }
        c.errors.clone_from(&self.errors);
        c.ok = c.answered - c.errors.values().sum::<u64>();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(n: u8) -> Digest {
        Digest::of(true, None, &[n])
    }

    #[test]
    fn counts_lost_duplicated_republished_and_unexpected() {
        let mut c = Checker::new("r-", 5, false);
        for seq in 0..4 {
            c.sent(seq, None);
        }
        c.sent(1, None); // sent again
        assert_eq!(c.result("r-0", ok(0), None), Seen::First);
        assert_eq!(c.result("r-0", ok(0), None), Seen::Again); // sent once: duplicated
        c.result("r-1", ok(1), None);
        c.result("r-1", ok(1), None); // sent twice: republished
        c.result("r-2", ok(2), None);
        c.sent(2, None);
        c.result("r-2", ok(9), None); // a copy that differs: duplicated
        assert_eq!(c.result("r-4", ok(4), None), Seen::Unexpected, "never sent");
        assert_eq!(c.result("x-1", ok(4), None), Seen::Unexpected);
        assert_eq!(c.result("r-99", ok(4), None), Seen::Unexpected);
        c.accepted("r-3");
        c.accepted("r-3");
        let k = c.counts();
        assert_eq!((k.sent, k.sends, k.resent), (4, 6, 2));
        assert_eq!((k.answered, k.lost, k.accepted), (3, 1, 1));
        assert_eq!((k.duplicated, k.republished, k.unexpected), (2, 1, 3));
        assert_eq!(k.lost_ids, ["r-3"]);
        assert_eq!(k.duplicated_ids, ["r-0", "r-2"]);
        assert_eq!(k.out_of_order, None);
    }

    #[test]
    fn errors_are_counted_by_code_on_first_results() {
        let mut c = Checker::new("", 3, false);
        for seq in 0..3 {
            c.sent(seq, None);
        }
        let failed = Digest::of(false, Some(9), b"");
        c.result("0", failed, Some("action_failed"));
        c.result("0", failed, Some("action_failed"));
        c.result("1", ok(1), None);
        c.result("2", failed, Some("action_failed"));
        let k = c.counts();
        assert_eq!(k.errors, BTreeMap::from([("action_failed".into(), 2)]));
        assert_eq!(k.ok, 1);
    }

    #[test]
    fn order_is_checked_per_key_among_requests_sent_once() {
        let mut c = Checker::new("", 6, true);
        for seq in 0..6 {
            c.sent(seq, Some(format!("k{}", seq % 2)));
        }
        c.sent(4, None); // sent again: its place in the order is unknown
        for seq in [0, 1, 4, 2, 3, 5] {
            c.result(&seq.to_string(), ok(0), None);
        }
        assert_eq!(c.counts().out_of_order, Some(0), "4 was sent twice");
        let mut c = Checker::new("", 4, true);
        for seq in 0..4 {
            c.sent(seq, Some("k".into()));
        }
        for seq in [0, 2, 1, 3] {
            c.result(&seq.to_string(), ok(0), None);
        }
        assert_eq!(c.counts().out_of_order, Some(1));
    }
}
