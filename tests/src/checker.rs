//! Counts, for a run, what was sent against what came back, in the manner of
//! Jepsen's `total-queue` checker: every reliability test reports lost,
//! duplicated and unexpected messages.

use std::collections::{HashMap, HashSet};
use std::fmt;

/// Tracks message ids sent and received.
#[derive(Debug, Default)]
pub struct Checker {
    sent: HashSet<String>,
    received: HashMap<String, u32>,
    /// Sent ids not received yet, kept as a count so asking is O(1).
    missing: usize,
}

/// The outcome of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub sent: usize,
    /// Sent ids received at least once.
    pub delivered: usize,
    /// Sent ids never received.
    pub lost: usize,
    /// Extra copies received of sent ids.
    pub duplicated: usize,
    /// Ids received that were never sent.
    pub unexpected: usize,
}

impl Checker {
    pub fn sent(&mut self, id: &str) {
        if self.sent.insert(id.to_owned()) && !self.received.contains_key(id) {
            self.missing += 1;
        }
    }

    pub fn received(&mut self, id: &str) {
        let count = self.received.entry(id.to_owned()).or_default();
        *count += 1;
        if *count == 1 && self.sent.contains(id) {
            self.missing -= 1;
        }
    }

    /// Whether `id` was received at least once.
    pub fn has_received(&self, id: &str) -> bool {
        self.received.contains_key(id)
    }

    /// Sent ids not received yet.
    pub fn missing(&self) -> usize {
        self.missing
    }

    /// Sent ids received at least once.
    pub fn answered(&self) -> usize {
        self.sent.len() - self.missing
    }

    pub fn report(&self) -> Report {
        let delivered = self
            .sent
            .iter()
            .filter(|id| self.received.contains_key(*id))
            .count();
        let duplicated = self
            .received
            .iter()
            .filter(|(id, _)| self.sent.contains(*id))
            .map(|(_, n)| (*n - 1) as usize)
            .sum();
        let unexpected = self
            .received
            .iter()
            .filter(|(id, _)| !self.sent.contains(*id))
            .map(|(_, n)| *n as usize)
            .sum();
        Report {
            sent: self.sent.len(),
            delivered,
            lost: self.sent.len() - delivered,
            duplicated,
            unexpected,
        }
    }
}

impl Report {
    /// Panics, with the report, unless nothing was lost, duplicated or
    /// unexpected.
    #[track_caller]
    pub fn assert_clean(&self) {
        assert_eq!(
            (self.lost, self.duplicated, self.unexpected),
            (0, 0, 0),
            "{self}"
        );
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {}, delivered {}, lost {}, duplicated {}, unexpected {}",
            self.sent, self.delivered, self.lost, self.duplicated, self.unexpected
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lost_duplicated_and_unexpected() {
        let mut c = Checker::default();
        for id in ["a", "b", "c"] {
            c.sent(id);
        }
        for id in ["a", "a", "b", "x"] {
            c.received(id);
        }
        assert_eq!((c.missing(), c.answered()), (1, 2));
        assert_eq!(
            c.report(),
            Report {
                sent: 3,
                delivered: 2,
                lost: 1,
                duplicated: 1,
                unexpected: 1
            }
        );
    }
}
