//! In-process taps on what the Integration Manager publishes: the HTTP
//! gateway's way to hear of a request's acknowledgement and result
//! ([`Taps::watch`]), and to stream a topic prefix ([`Taps::stream`]),
//! without a socket of its own.
//!
//! A tap never slows publishing: everything is handed over with
//! `try_send` into a bounded channel, and a tap that is full loses the
//! message (a stream counts what it lost). With no tap open, publishing
//! pays one atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::Publication;
use crate::inflight::{MessageKey, key_of};
use crate::wire::Message;
use crate::wire::envelope::Kind;

/// What one request's watch holds at most before it is read: its
/// acknowledgement and its result, with room for a result published
/// again (a duplicate's).
const WATCH_CAPACITY: usize = 4;

/// The taps, shared by the Integration Manager and the gateway.
#[derive(Debug, Clone, Default)]
pub struct Taps {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Watches and streams open: publishing looks no further when 0.
    open: AtomicUsize,
    next: AtomicU64,
    watches: Mutex<HashMap<MessageKey, Vec<Watcher>>>,
    streams: Mutex<Vec<StreamTap>>,
}

/// One watch's serial number and channel.
type Watcher = (u64, mpsc::Sender<Message>);

#[derive(Debug)]
struct StreamTap {
    serial: u64,
    prefix: String,
    tx: mpsc::Sender<Publication>,
    lost: Arc<AtomicU64>,
}

/// Locks, recovering from a panic elsewhere: the maps stay consistent,
/// every change to them is one call.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Taps {
    /// Hands `publication` to the taps that want it.
    pub fn offer(&self, publication: &Publication) {
        if self.inner.open.load(Ordering::Acquire) == 0 {
            return;
        }
        let envelope = &publication.message.envelope;
        if matches!(envelope.kind, Kind::Result | Kind::Accepted) {
            let watches = lock(&self.inner.watches);
            if let Some(watchers) = watches.get(&key_of(envelope)) {
                for (_, tx) in watchers {
                    let _ = tx.try_send(Message::clone(&publication.message));
                }
            }
        }
        for stream in lock(&self.inner.streams).iter() {
            if publication.topic.starts_with(&stream.prefix)
                && stream.tx.try_send(publication.clone()).is_err()
            {
                stream.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Hears of what is published for the message `key` (its service and
    /// id): acknowledgements and results, from now until the watch is
    /// dropped.
    pub fn watch(&self, key: MessageKey) -> Watch {
        let (tx, rx) = mpsc::channel(WATCH_CAPACITY);
        let serial = self.inner.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.watches)
            .entry(key.clone())
            .or_default()
            .push((serial, tx));
        self.inner.open.fetch_add(1, Ordering::Release);
        Watch {
            taps: self.clone(),
            key,
            serial,
            rx,
        }
    }

    /// Every publication on a topic starting with `prefix`, from now until
    /// the stream is dropped; at most `capacity` wait to be read, and what
    /// comes past that is lost and counted ([`Stream::lost`]).
    pub fn stream(&self, prefix: String, capacity: usize) -> Stream {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let serial = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let lost = Arc::new(AtomicU64::new(0));
        lock(&self.inner.streams).push(StreamTap {
            serial,
            prefix,
            tx,
            lost: Arc::clone(&lost),
        });
        self.inner.open.fetch_add(1, Ordering::Release);
        Stream {
            taps: self.clone(),
            serial,
            rx,
            lost,
        }
    }

    /// Watches and streams open now.
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }
}

/// What is published for one message ([`Taps::watch`]).
#[derive(Debug)]
pub struct Watch {
    taps: Taps,
    key: MessageKey,
    serial: u64,
    rx: mpsc::Receiver<Message>,
}

impl Watch {
    /// The next acknowledgement or result published for the message.
    pub async fn next(&mut self) -> Option<Message> {
        self.rx.recv().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watches = lock(&self.taps.inner.watches);
        if let Some(watchers) = watches.get_mut(&self.key) {
            watchers.retain(|(serial, _)| *serial != self.serial);
            if watchers.is_empty() {
                watches.remove(&self.key);
            }
        }
        self.taps.inner.open.fetch_sub(1, Ordering::Release);
    }
}

/// The publications on a topic prefix ([`Taps::stream`]).
#[derive(Debug)]
pub struct Stream {
    taps: Taps,
    serial: u64,
    rx: mpsc::Receiver<Publication>,
    lost: Arc<AtomicU64>,
}

impl Stream {
    /// The next publication.
    pub async fn next(&mut self) -> Option<Publication> {
        self.rx.recv().await
    }

    /// How many publications were lost so far because the stream was full.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        lock(&self.taps.inner.streams).retain(|s| s.serial != self.serial);
        self.taps.inner.open.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::envelope::Envelope;

    fn publication(topic: &str, kind: Kind, service: &str, id: &str) -> Publication {
        let mut envelope = Envelope::request(id, "Echo");
        envelope.kind = kind;
        envelope.service = service.into();
        Publication {
            topic: topic.into(),
            message: Message::new(envelope, bytes::Bytes::from_static(&[0xc0])).into(),
        }
    }

    #[tokio::test]
    async fn a_watch_hears_its_own_messages_results_and_acks_only() {
        let taps = Taps::default();
        let mut mine = taps.watch(("ada".into(), "1".into()));
        // Another service's message with the same id, and a step published
        // (a request) for this one: neither reaches the watch.
        taps.offer(&publication("t", Kind::Result, "bob", "1"));
        taps.offer(&publication("t", Kind::Request, "ada", "1"));
        taps.offer(&publication("t", Kind::Accepted, "ada", "1"));
        taps.offer(&publication("t", Kind::Result, "ada", "1"));
        assert_eq!(mine.next().await.unwrap().envelope.kind, Kind::Accepted);
        assert_eq!(mine.next().await.unwrap().envelope.kind, Kind::Result);
        assert!(mine.rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_full_stream_loses_and_counts_and_never_blocks() {
        let taps = Taps::default();
        let mut stream = taps.stream("Announce~".into(), 2);
        for i in 0..5 {
            taps.offer(&publication(
                "Announce~x",
                Kind::Request,
                "s",
                &i.to_string(),
            ));
        }
        taps.offer(&publication("Other~x", Kind::Request, "s", "9"));
        assert_eq!(stream.lost(), 3);
        assert_eq!(stream.next().await.unwrap().message.envelope.id, "0");
        assert_eq!(stream.next().await.unwrap().message.envelope.id, "1");
        assert!(stream.rx.try_recv().is_err());
    }

    #[test]
    fn dropping_taps_unregisters_them() {
        let taps = Taps::default();
        let a = taps.watch(("s".into(), "1".into()));
        let b = taps.watch(("s".into(), "1".into()));
        let c = taps.stream(String::new(), 1);
        assert_eq!(taps.open(), 3);
        drop(a);
        assert_eq!(
            lock(&taps.inner.watches)[&("s".to_owned(), "1".to_owned())].len(),
            1
        );
        drop(b);
        drop(c);
        assert_eq!(taps.open(), 0);
        assert!(lock(&taps.inner.watches).is_empty());
        assert!(lock(&taps.inner.streams).is_empty());
    }
}
