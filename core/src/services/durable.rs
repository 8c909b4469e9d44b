//! Durable subscriptions: a subscriber's name for topic prefixes, under
//! which the node keeps what it published on them, in order, until the
//! subscriber acknowledges it (`docs/durable.md`).
//!
//! A [`Durable`] is a log of publications, each with a sequence number (1,
//! 2, …), a cursor of what was sent, and the sequence number acknowledged.
//! At most `window` messages are sent and unacknowledged at once; a
//! subscriber that subscribes again (it reconnected) is sent everything
//! unacknowledged again, in order, then what comes. Retention is bounded in
//! count, bytes and age: past a bound the oldest messages go, acknowledged
//! or not, and are counted as dropped.
//!
//! This module is the state machine alone (no clock read, no socket).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::wire::Message;

/// How much a durable subscription keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_messages: usize,
    pub max_bytes: usize,
    pub max_age: Duration,
}

/// One kept publication.
#[derive(Debug, Clone)]
struct Kept {
    seq: u64,
    topic: String,
    message: Message,
    at: Instant,
}

/// One durable subscription.
#[derive(Debug)]
pub struct Durable {
    prefixes: Vec<String>,
    /// Where deliveries go: the subscriber's topic.
    topic: String,
    window: u32,
    log: VecDeque<Kept>,
    bytes: usize,
    next_seq: u64,
    /// Everything up to it is acknowledged (and out of the log).
    acked: u64,
    /// Everything up to it was sent.
    sent: u64,
    dropped: u64,
    retention: Retention,
    /// When it was made, microseconds since the Unix epoch: what tells a
    /// subscriber this subscription from an earlier one of the same name
    /// (one the node lost when it restarted).
    made_us: u64,
}

/// What `zmanager services` shows of a durable subscription.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DurableInfo {
    pub service: String,
    pub name: String,
    pub prefixes: Vec<String>,
    /// Kept, not acknowledged.
    pub backlog: usize,
    /// Sent, not acknowledged.
    pub unacked: u64,
    pub acked: u64,
    /// Dropped by retention before they were acknowledged or sent.
    pub dropped: u64,
}

impl Durable {
    pub fn new(
        prefixes: Vec<String>,
        topic: String,
        window: u32,
        retention: Retention,
        made_us: u64,
    ) -> Self {
        Self {
            made_us,
            prefixes,
            topic,
            window: window.max(1),
            log: VecDeque::new(),
            bytes: 0,
            next_seq: 1,
            acked: 0,
            sent: 0,
            dropped: 0,
            retention,
        }
    }

    /// The subscriber (re)subscribes: new prefixes, topic and window, and
    /// what is unacknowledged is sent again.
    pub fn resubscribe(&mut self, prefixes: Vec<String>, topic: String, window: u32) {
        self.prefixes = prefixes;
        self.topic = topic;
        self.window = window.max(1);
        self.sent = self.acked;
    }

    /// True when a publication on `topic` is this subscription's (never
    /// what goes to its own subscriber's topic).
    pub fn wants(&self, topic: &str) -> bool {
        !topic.starts_with(self.topic.as_str())
            && self.prefixes.iter().any(|p| topic.starts_with(p.as_str()))
    }

    /// Keeps a publication; drops the oldest past the bounds.
    pub fn keep(&mut self, topic: &str, message: Message, now: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += message.size();
        self.log.push_back(Kept {
            seq,
            topic: topic.to_owned(),
            message,
            at: now,
        });
        self.expire(now);
    }

    /// Drops what is past the bounds, oldest first.
    pub fn expire(&mut self, now: Instant) {
        let r = self.retention;
        while let Some(oldest) = self.log.front() {
            let over = self.log.len() > r.max_messages
                || self.bytes > r.max_bytes
                || now.saturating_duration_since(oldest.at) > r.max_age;
            if !over {
                break;
            }
            let Some(gone) = self.log.pop_front() else {
                break;
            };
            self.bytes -= gone.message.size();
            self.dropped += 1;
            // What was dropped counts as handled: sending resumes after it.
            self.acked = self.acked.max(gone.seq);
            self.sent = self.sent.max(gone.seq);
        }
    }

    /// The subscriber acknowledges everything up to `seq`.
    pub fn ack(&mut self, seq: u64) {
        let seq = seq.min(self.sent);
        while self.log.front().is_some_and(|k| k.seq <= seq) {
            if let Some(done) = self.log.pop_front() {
                self.bytes -= done.message.size();
            }
        }
        self.acked = self.acked.max(seq);
    }

    /// What to send now, within the window: (delivery topic, message), in
    /// order. The delivery topic is the subscriber's topic, the sequence
    /// number and the original topic: `TOPIC` `SEQ` `~` `ORIGINAL`.
    pub fn next_sends(&mut self) -> Vec<(String, Message)> {
        let mut out = Vec::new();
        let limit = self.acked + u64::from(self.window);
        for kept in &self.log {
            if kept.seq <= self.sent {
                continue;
            }
            if kept.seq > limit {
                break;
            }
            out.push((
                format!("{}{}~{}", self.topic, kept.seq, kept.topic),
                kept.message.clone(),
            ));
            self.sent = kept.seq;
        }
        out
    }

    /// Everything up to it is acknowledged (or dropped).
    pub fn acked(&self) -> u64 {
        self.acked
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// When it was made (microseconds since the Unix epoch): unique among
    /// the node's subscriptions of one name, and later than any before a
    /// restart unless the clock went back.
    pub fn made_us(&self) -> u64 {
        self.made_us
    }

    pub fn info(&self, service: &str, name: &str) -> DurableInfo {
        DurableInfo {
            service: service.to_owned(),
            name: name.to_owned(),
            prefixes: self.prefixes.clone(),
            backlog: self.log.len(),
            unacked: self.sent.saturating_sub(self.acked),
            acked: self.acked,
            dropped: self.dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::wire::envelope::Envelope;

    fn message(n: u32) -> Message {
        Message::new(
            Envelope::request(format!("m{n}"), "F"),
            Bytes::from_static(&[0xc0]),
        )
    }

    fn retention() -> Retention {
        Retention {
            max_messages: 100,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(3600),
        }
    }

    fn seqs(sends: &[(String, Message)]) -> Vec<String> {
        sends
            .iter()
            .map(|(topic, _)| topic.trim_start_matches("@reply~s~d~").to_owned())
            .collect()
    }

    #[test]
    fn messages_go_out_in_order_within_the_window_and_acks_free_it() {
        let t0 = Instant::now();
        let mut d = Durable::new(vec!["A~".into()], "@reply~s~d~".into(), 2, retention(), 1);
        assert!(d.wants("A~x") && !d.wants("B~"));
        let all = Durable::new(vec![String::new()], "@reply~s~d~".into(), 2, retention(), 1);
        assert!(!all.wants("@reply~s~d~7~A~x"), "not its own deliveries");
        for n in 0..5 {
            d.keep("A~x", message(n), t0);
        }
        assert_eq!(seqs(&d.next_sends()), ["1~A~x", "2~A~x"]);
        assert!(d.next_sends().is_empty(), "the window is full");
        d.ack(1);
        assert_eq!(seqs(&d.next_sends()), ["3~A~x"]);
        d.ack(3);
        assert_eq!(seqs(&d.next_sends()), ["4~A~x", "5~A~x"]);
        assert_eq!(d.info("s", "d").backlog, 2);
        d.ack(99); // past what was sent: up to what was sent
        assert_eq!(d.info("s", "d").acked, 5);
        assert_eq!(d.info("s", "d").backlog, 0);
    }

    #[test]
    fn subscribing_again_sends_the_unacknowledged_again_in_order() {
        let t0 = Instant::now();
        let mut d = Durable::new(
            vec![String::new()],
            "@reply~s~d~".into(),
            10,
            retention(),
            1,
        );
        for n in 0..4 {
            d.keep("T", message(n), t0);
        }
        let _ = d.next_sends();
        d.ack(2);
        d.resubscribe(vec![String::new()], "@reply~s~d~".into(), 10);
        assert_eq!(seqs(&d.next_sends()), ["3~T", "4~T"]);
    }

    #[test]
    fn retention_drops_the_oldest_and_counts_them() {
        let t0 = Instant::now();
        let r = Retention {
            max_messages: 3,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(10),
        };
        let mut d = Durable::new(vec![String::new()], "@reply~s~d~".into(), 10, r, 1);
        for n in 0..5 {
            d.keep("T", message(n), t0);
        }
        let info = d.info("s", "d");
        assert_eq!((info.backlog, info.dropped), (3, 2));
        assert_eq!(
            seqs(&d.next_sends()),
            ["3~T", "4~T", "5~T"],
            "after the dropped"
        );
        d.keep("T", message(9), t0 + Duration::from_secs(5));
        d.expire(t0 + Duration::from_secs(11));
        let info = d.info("s", "d");
        assert_eq!((info.backlog, info.dropped), (1, 5), "too old");
        let bytes = message(0).size();
        let r = Retention {
            max_messages: 100,
            max_bytes: 2 * bytes,
            max_age: Duration::from_secs(10),
        };
        let mut d = Durable::new(vec![String::new()], "x".into(), 10, r, 1);
        for n in 0..3 {
            d.keep("T", message(n), t0);
        }
        assert_eq!(d.info("s", "d").dropped, 1, "too many bytes");
        assert_eq!(d.bytes(), 2 * bytes);
    }
}
