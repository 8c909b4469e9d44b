//! Duplicate suppression: the results of recently finished messages, by
//! (service, id), so a request pushed again within the window is not
//! processed again — its result is published again instead.
//!
//! Bounded three ways: entries older than `window` are dropped, and at most
//! `capacity` entries and `max_bytes` bytes ([`Message::size`]) are kept
//! (the oldest go first). So the window is `window` only while fewer than
//! `capacity` results (and `max_bytes`) finish within it: at 100,000
//! results a second, 10,000 entries last a tenth of a second.
//!
//! Entries are found by a 64-bit hash of their key, keyed per process
//! ([`RandomState`]: a peer cannot choose ids that collide), and checked
//! against the result's own service and id when read; no copy of the key
//! is kept. Two keys of one hash (about one chance in 2^64 a pair) would
//! only make the older result forgotten early.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::wire::Message;

/// Recently finished messages and their results.
#[derive(Debug)]
pub struct Recent {
    window: Duration,
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    /// Shared with the publication of the result: kept without a copy.
    /// By the hash of its key ([`Recent::hash`]).
    results: HashMap<u64, (Instant, Arc<Message>)>,
    order: VecDeque<(Instant, u64)>,
    /// Keys the hashes of keys, per process.
    keys: RandomState,
}

impl Recent {
    pub fn new(window: Duration, capacity: usize, max_bytes: usize) -> Self {
        Self {
            window,
            capacity,
            max_bytes,
            bytes: 0,
            results: HashMap::new(),
            order: VecDeque::new(),
            keys: RandomState::new(),
        }
    }

    fn hash(&self, service: &str, id: &str) -> u64 {
        self.keys.hash_one((service, id))
    }

    /// Remembers the result of the message `id` of `service`, finished
    /// `now`.
    pub fn insert(&mut self, (service, id): (&str, &str), result: Arc<Message>, now: Instant) {
        let size = result.size();
        if self.capacity == 0 || self.window.is_zero() || size > self.max_bytes {
            return;
        }
        self.expire(now);
        let key = self.hash(service, id);
        if let Some((_, old)) = self.results.remove(&key) {
            self.bytes -= old.size();
        }
        while self.results.len() >= self.capacity || self.bytes + size > self.max_bytes {
            if !self.pop_oldest() {
                break;
            }
        }
        self.order.push_back((now, key));
        self.bytes += size;
        self.results.insert(key, (now, result));
    }

    /// The bytes of the results kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The result of the message `id` of `service` if it finished within
    /// the window (by its strings: no key is made to look it up).
    pub fn get(&self, service: &str, id: &str, now: Instant) -> Option<&Arc<Message>> {
        self.results
            .get(&self.hash(service, id))
            .filter(|(at, _)| now.saturating_duration_since(*at) <= self.window)
            .map(|(_, m)| m)
            .filter(|m| m.envelope.service == service && m.envelope.id == id)
    }

    pub fn len(&self) -> usize {
        self.results.len()
    }

    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) <= self.window {
                break;
            }
            self.pop_oldest();
        }
    }

    /// Drops the oldest entry; false when there is none.
    fn pop_oldest(&mut self) -> bool {
        let Some((at, key)) = self.order.pop_front() else {
            return false;
        };
        // Only if that entry is still the one recorded at `at` (the key may
        // have been inserted again since).
        if let Entry::Occupied(entry) = self.results.entry(key)
            && entry.get().0 == at
        {
            let (_, old) = entry.remove();
            self.bytes -= old.size();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::envelope::Envelope;
    use bytes::Bytes;

    fn key(id: &str) -> (&str, &str) {
        ("svc", id)
    }

    /// The result of `key(id)`.
    fn result(id: &str) -> Arc<Message> {
        let mut envelope = Envelope::request(id, "F");
        envelope.service = "svc".into();
        Arc::new(Message::new(envelope, Bytes::new()))
    }

    #[test]
    fn remembers_within_the_window_only() {
        let start = Instant::now();
        let mut r = Recent::new(Duration::from_secs(10), 100, 1 << 20);
        r.insert(key("a"), result("a"), start);
        assert!(r.get("svc", "a", start + Duration::from_secs(10)).is_some());
        assert!(r.get("svc", "a", start + Duration::from_secs(11)).is_none());
        assert!(r.get("svc", "b", start).is_none());
        // Expired entries are dropped on the next insert.
        r.insert(key("b"), result("b"), start + Duration::from_secs(11));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn capacity_bounds_it() {
        let start = Instant::now();
        let mut r = Recent::new(Duration::from_secs(60), 3, 1 << 20);
        for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            r.insert(key(id), result(id), start + Duration::from_millis(i as u64));
        }
        assert_eq!(r.len(), 3);
        let now = start + Duration::from_secs(1);
        assert!(r.get("svc", "a", now).is_none());
        assert!(r.get("svc", "e", now).is_some());
        // And bytes: each result is its size; room for two.
        let two = 2 * result("a").size();
        let mut r = Recent::new(Duration::from_secs(60), 100, two);
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            r.insert(key(id), result(id), start + Duration::from_millis(i as u64));
        }
        assert_eq!((r.len(), r.bytes()), (2, two));
        assert!(r.get("svc", "a", now).is_none());
        // The same key again replaces its entry, counted once.
        r.insert(key("c"), result("c"), now);
        assert_eq!((r.len(), r.bytes()), (2, two));
        let mut off = Recent::new(Duration::from_secs(60), 0, 1 << 20);
        off.insert(key("a"), result("a"), start);
        assert!(off.is_empty());
    }

    /// An entry is read back only for its own key: a result kept under
    /// a hash is checked against the service and id asked for.
    #[test]
    fn a_result_is_given_only_for_its_own_key() {
        let start = Instant::now();
        let mut r = Recent::new(Duration::from_secs(10), 100, 1 << 20);
        // Kept under the hash of ("svc", "a"), though the message is b's:
        // as if two keys had one hash.
        r.insert(key("a"), result("b"), start);
        assert!(r.get("svc", "a", start).is_none(), "not a's result");
        r.insert(key("c"), result("c"), start);
        assert_eq!(
            r.get("svc", "c", start).map(|m| m.envelope.id.as_str()),
            Some("c")
        );
        assert!(r.get("other", "c", start).is_none());
    }
}
