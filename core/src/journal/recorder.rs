//! The Subject's side of the journal: the events of one turn of its loop
//! are gathered and submitted together to the group-commit
//! [`JournalWriter`], and the `accepted` acknowledgements of that turn are
//! published only once those events are committed.
//!
//! The Subject never waits for a commit itself: it dispatches work at once,
//! and an acknowledger task waits for each batch's commit (in submission
//! order, which is commit order) and then hands its acknowledgements to the
//! Integration Manager. A request's result may therefore reach its service
//! before the acknowledgement does; a result implies acceptance.
//!
//! With the journal off the recorder records nothing and publishes the
//! acknowledgements of a turn at its end.
//!
//! One `accepted` message per reply topic per turn acknowledges all the
//! turn's requests of that service: its payload is the array of their ids
//! (`docs/protocol.md`). Under load that is one publication for hundreds of
//! requests instead of one each.

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{Committed, Event, JournalWriter};
use crate::envelope::{Envelope, Kind};
use crate::integration_manager::Publication;
use crate::wire::Message;

/// Batches waiting for their commit before their acknowledgements go out.
/// Past it the Subject waits (backpressure, like the writer's own queue).
const ACK_QUEUE: usize = 64;

/// A turn's commit (none when it recorded nothing), its acknowledgements,
/// and its number.
type Batch = (Option<Committed>, Vec<Publication>, u64);

/// Gathers a turn's events and acknowledgements.
#[derive(Debug)]
pub struct Recorder {
    writer: Option<JournalWriter>,
    events: Vec<Event>,
    /// The turn's acknowledgements: per reply topic, the first request's
    /// envelope and every id.
    acks: Vec<(String, Envelope, Vec<String>)>,
    acker: mpsc::Sender<Batch>,
    task: JoinHandle<()>,
    /// The number of the turn being gathered.
    turn: u64,
    /// The number of the last turn whose events are committed (or failed).
    committed: watch::Receiver<u64>,
}

impl Recorder {
    /// A recorder writing through `writer` (`None`: the journal is off) and
    /// publishing acknowledgements on `publish`.
    pub fn new(writer: Option<JournalWriter>, publish: mpsc::Sender<Publication>) -> Self {
        let (acker, batches) = mpsc::channel(ACK_QUEUE);
        let (done, committed) = watch::channel(0);
        Self {
            writer,
            events: Vec::new(),
            acks: Vec::new(),
            acker,
            task: tokio::spawn(acknowledge(batches, publish, done)),
            turn: 1,
            committed,
        }
    }

    /// The number of the turn being gathered: what is recorded now is on
    /// disk once [`Recorder::committed`] reaches it.
    pub fn turn(&self) -> u64 {
        self.turn
    }

    /// The number of the last turn whose events are committed, watched.
    /// (A turn whose commit failed counts too: what waits on it must not
    /// wait forever; the failure is logged.)
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// Whether events are recorded.
    pub fn is_on(&self) -> bool {
        self.writer.is_some()
    }

    /// Records the event `make` builds (only built when the journal is on).
    pub fn record(&mut self, make: impl FnOnce() -> Event) {
        if self.writer.is_some() {
            self.events.push(make());
        }
    }

    /// Acknowledges the request `envelope` on `topic` once everything
    /// recorded so far is committed.
    pub fn acknowledge(&mut self, topic: &str, envelope: &Envelope) {
        // A turn's requests come from few services: a short scan.
        match self.acks.iter_mut().find(|(t, _, _)| t == topic) {
            Some((_, _, ids)) => ids.push(envelope.id.clone()),
            None => self.acks.push((
                topic.to_owned(),
                envelope.clone(),
                vec![envelope.id.clone()],
            )),
        }
    }

    /// Submits the turn's events and queues its acknowledgements behind
    /// their commit. Waits only when the writer's or the acknowledger's
    /// queue is full.
    pub async fn flush(&mut self) {
        if self.events.is_empty() && self.acks.is_empty() {
            return;
        }
        // A turn with acknowledgements only needs no commit of its own: the
        // acknowledger publishes it after the batches before it.
        let committed = match &self.writer {
            Some(writer) if !self.events.is_empty() => {
                // The next turn's vector starts at this one's size: events
                // are large, and regrowing it each turn copies them.
                let next = Vec::with_capacity(self.events.len());
                Some(
                    writer
                        .submit(std::mem::replace(&mut self.events, next))
                        .await,
                )
            }
            _ => None,
        };
        let acks = self.acks.drain(..).map(ack_message).collect();
        let turn = self.turn;
        self.turn += 1;
        // The acknowledger lives until `close`.
        let _ = self.acker.send((committed, acks, turn)).await;
    }

    /// Flushes, waits until every batch is committed and acknowledged, and
    /// stops the writer.
    pub async fn close(mut self) {
        self.flush().await;
        drop(self.acker);
        let _ = self.task.await;
        if let Some(writer) = self.writer.take() {
            // Dropping the writer joins its thread after its last commit.
            let _ = tokio::task::spawn_blocking(move || drop(writer)).await;
        }
    }
}

/// One `accepted` message for `ids`: the envelope of the first request
/// (kind `accepted`), the ids as a MessagePack array.
fn ack_message((topic, mut envelope, ids): (String, Envelope, Vec<String>)) -> Publication {
    envelope.kind = Kind::Accepted;
    envelope.ack = false;
    // Strings into a Vec cannot fail to encode.
    let payload = rmp_serde::to_vec(&ids).unwrap_or_default();
    Publication {
        topic,
        message: Message::new(envelope, Bytes::from(payload)),
    }
}

/// Publishes each batch's acknowledgements once its events are committed.
/// A batch that failed to commit is not acknowledged: its services send
/// again, and the node takes the request again (as a duplicate if it is
/// still in flight).
async fn acknowledge(
    mut batches: mpsc::Receiver<Batch>,
    publish: mpsc::Sender<Publication>,
    done: watch::Sender<u64>,
) {
    while let Some((committed, acks, turn)) = batches.recv().await {
        if let Some(committed) = committed {
            if let Err(e) = committed.await {
                tracing::error!(error = %e, unacknowledged = acks.len(), "journal commit failed: requests not acknowledged");
                done.send_replace(turn);
                continue;
            }
        }
        done.send_replace(turn);
        for ack in acks {
            if publish.send(ack).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::testing::{TempDir, request};
    use crate::journal::{Journal, SqliteJournal, SyncMode};

    fn ids(p: &Publication) -> Vec<String> {
        assert_eq!(p.message.envelope.kind, Kind::Accepted);
        rmp_serde::from_slice(&p.message.payload).unwrap()
    }

    #[tokio::test]
    async fn acknowledgements_follow_the_commit_of_what_was_recorded_before_them() {
        let dir = TempDir::new("recorder");
        let journal = SqliteJournal::open(dir.path(), SyncMode::Normal).unwrap();
        let writer = JournalWriter::start(journal, 16, 1000).unwrap();
        let (publish, mut published) = mpsc::channel(16);
        let mut recorder = Recorder::new(Some(writer), publish);
        assert!(recorder.is_on());
        recorder.record(|| Event::accepted(1, request("s", "1", "F")));
        recorder.acknowledge("t", &request("s", "1", "F").envelope);
        recorder.flush().await;
        let got = published.recv().await.unwrap();
        assert_eq!(got.message.envelope.id, "1");
        assert_eq!(ids(&got), ["1"]);
        // By the time the acknowledgement is out, the event is on disk.
        let check = SqliteJournal::open(dir.path(), SyncMode::Normal).unwrap();
        assert_eq!(check.unfinished().unwrap().len(), 1);
        // The turn's number is reported committed, and the next one is
        // being gathered.
        let mut committed = recorder.committed();
        assert_eq!(*committed.borrow_and_update(), 1);
        assert_eq!(recorder.turn(), 2);
        recorder.close().await;
    }

    #[tokio::test]
    async fn with_the_journal_off_nothing_is_built_and_acks_go_out_at_flush() {
        let (publish, mut published) = mpsc::channel(16);
        let mut recorder = Recorder::new(None, publish);
        assert!(!recorder.is_on());
        recorder.record(|| unreachable!("no event is built with the journal off"));
        for (topic, id) in [("a", "1"), ("b", "2"), ("a", "3")] {
            recorder.acknowledge(topic, &request("s", id, "F").envelope);
        }
        assert!(published.try_recv().is_err(), "not before the flush");
        recorder.flush().await;
        let first = published.recv().await.unwrap();
        assert_eq!(
            (first.topic.as_str(), ids(&first)),
            ("a", vec!["1".to_owned(), "3".to_owned()])
        );
        let second = published.recv().await.unwrap();
        assert_eq!(
            (second.topic.as_str(), ids(&second)),
            ("b", vec!["2".to_owned()])
        );
        recorder.close().await;
    }
}
