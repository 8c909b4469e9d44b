//! Retention: finished messages are removed from the journal after
//! `retain`, or sooner, oldest first, while the journal's data is over
//! `max_mb`, so it does not grow without bound. Unfinished messages
//! (accepted, suspended, resumed) are never removed: recovery needs them.
//!
//! [`Retention`] runs [`run_pass`] every `compact_every` on its own
//! thread with its own connection, beside the group-commit writer (WAL
//! lets them work on one file at once). It deletes in bounded transactions
//! of [`Policy::chunk`] messages and pauses between them at least as long
//! as each took, so the writer, which waits for the write lock while a
//! chunk commits, gets it back quickly and is never starved.
//!
//! **Size** is measured as SQLite's pages in use times the page size (see
//! [`Journal::data_bytes`]): deleted rows free pages, which SQLite keeps in
//! the file and reuses for new events, so the file itself does not shrink
//! (only `VACUUM` would shrink it, and it rewrites the whole file). With
//! SQLite the measure covers the whole `zmanager.db`, dead letters included.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::postgres::Holding;
use super::{Backend, Journal, JournalError, Location};
use crate::node::config::JournalConfig;
use crate::wire::envelope::now_us;

/// What retention keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Messages finished longer ago than this (µs) are removed.
    pub retain_us: u64,
    /// Past this many bytes of data, finished messages are removed oldest
    /// first.
    pub max_bytes: u64,
    /// Messages removed per transaction, at most.
    pub chunk: u64,
}

/// Messages removed per transaction by default: a few milliseconds of
/// deleting.
pub const DEFAULT_CHUNK: u64 = 1_000;

/// The shortest pause between two transactions of a pass: longer than the
/// gaps between SQLite's busy-handler retries in its first ~100 ms, so a
/// writer waiting for the lock gets it in the pause.
const MIN_PAUSE: Duration = Duration::from_millis(25);

impl Policy {
    pub fn from_config(config: &JournalConfig) -> Self {
        Self {
            retain_us: u64::try_from(config.retain.as_micros()).unwrap_or(u64::MAX),
            max_bytes: config.max_mb.saturating_mul(1024 * 1024),
            chunk: DEFAULT_CHUNK,
        }
    }
}

/// What one pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Messages removed because they finished longer ago than `retain_us`.
    pub expired: u64,
    /// Messages removed, oldest first, because the data was over `max_bytes`.
    pub over_size: u64,
    /// Bytes of data when the pass ended (as last measured).
    pub data_bytes: u64,
    /// The data is still over `max_bytes` and no finished message is left
    /// to remove: only unfinished ones, which are never removed.
    pub over_size_unfinished: bool,
    /// The pass was cut short by a stop.
    pub stopped: bool,
}

impl Pass {
    pub fn removed(&self) -> u64 {
        self.expired + self.over_size
    }
}

/// One retention pass over `journal` at time `now_us`. Between two
/// transactions it calls `pause` with how long the last one took; `pause`
/// returns false to stop the pass there.
pub fn run_pass(
    journal: &impl Journal,
    policy: &Policy,
    now_us: u64,
    pause: &mut dyn FnMut(Duration) -> bool,
) -> Result<Pass, JournalError> {
    let chunk = policy.chunk.max(1);
    let mut pass = Pass::default();
    let cutoff = now_us.saturating_sub(policy.retain_us);
    loop {
        let started = Instant::now();
        let n = journal.compact_oldest(cutoff, chunk)?;
        pass.expired += n;
        if n < chunk {
            break;
        }
        if !pause(started.elapsed()) {
            pass.stopped = true;
            return Ok(pass);
        }
    }
    loop {
        pass.data_bytes = journal.data_bytes()?;
        if pass.data_bytes <= policy.max_bytes {
            break;
        }
        let started = Instant::now();
        let n = journal.compact_oldest(u64::MAX, chunk)?;
        pass.over_size += n;
        if n == 0 {
            pass.over_size_unfinished = true;
            break;
        }
        if !pause(started.elapsed()) {
            pass.stopped = true;
            break;
        }
    }
    Ok(pass)
}

/// Retention running on its own thread; stopped (promptly, even in the
/// middle of a pass) when dropped or [`stop`](Self::stop)ped.
#[derive(Debug)]
pub struct Retention {
    /// Dropped to stop the thread: it waits on the other end.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Retention {
    /// Starts retention on the journal `at` (opened once more, beside the
    /// node's own connection: open that first) with `config`'s `retain`,
    /// `max_mb` and `compact_every`. The first pass runs one interval after
    /// the start. It connects here, so not from a task of a Tokio runtime
    /// (the PostgreSQL client runs its own).
    /// In PostgreSQL, given the node's `holding` of the lease, it removes
    /// nothing once another node holds it.
    pub fn start(
        at: &Location,
        config: &JournalConfig,
        holding: Option<&Holding>,
    ) -> Result<Self, JournalError> {
        let journal = Backend::open_beside(at, config.sync, holding)?;
        Self::start_with(
            journal,
            Policy::from_config(config),
            config.compact_every.max(Duration::from_millis(1)),
        )
    }

    /// Starts retention on `journal`, a pass every `every`.
    pub fn start_with(
        journal: impl Journal + Send + 'static,
        policy: Policy,
        every: Duration,
    ) -> Result<Self, JournalError> {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("journal-retention".into())
            .spawn(move || run(&journal, &policy, every, &stopped))
            .map_err(JournalError::Thread)?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it: at most the end of the current
    /// transaction.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.stop = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the journal retention thread panicked");
        }
    }
}

impl Drop for Retention {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The thread: a pass every `every` until `stopped` disconnects.
fn run(journal: &impl Journal, policy: &Policy, every: Duration, stopped: &mpsc::Receiver<()>) {
    // Waits `d`; false once stopped.
    let wait = |d: Duration| {
        matches!(
            stopped.recv_timeout(d),
            Err(mpsc::RecvTimeoutError::Timeout)
        )
    };
    let mut warned = false;
    while wait(every) {
        let mut pause = |took: Duration| wait(took.max(MIN_PAUSE));
        match run_pass(journal, policy, now_us(), &mut pause) {
            Ok(pass) => {
                if pass.removed() > 0 {
                    tracing::info!(
                        expired = pass.expired,
                        over_size = pass.over_size,
                        data_bytes = pass.data_bytes,
                        "journal retention: removed {} finished messages ({} finished more than retain ago, {} oldest over max_mb)",
                        pass.removed(),
                        pass.expired,
                        pass.over_size
                    );
                }
                if pass.over_size_unfinished && !warned {
                    tracing::warn!(
                        data_bytes = pass.data_bytes,
                        max_bytes = policy.max_bytes,
                        "journal retention: the journal is over max_mb and holds only unfinished messages, which are never removed"
                    );
                }
                warned = pass.over_size_unfinished;
                if pass.stopped {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "journal retention pass failed; trying again at the next")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::journal::testing::{TempDir, request};
    use crate::journal::{Event, SqliteJournal, SyncMode};

    fn key(id: &str) -> (String, String) {
        ("s".into(), id.into())
    }

    /// `n` messages `{prefix}{i}` accepted at `at_us` and completed at
    /// `at_us + 1`, with payloads of `size` bytes.
    fn finished(prefix: &str, n: usize, at_us: u64, size: usize) -> Vec<Event> {
        let mut events = Vec::new();
        for i in 0..n {
            let id = format!("{prefix}{i}");
            let mut m = request("s", &id, "F");
            m.payload = Bytes::from(vec![1u8; size]);
            events.push(Event::accepted(at_us, m));
            events.push(Event::Completed {
                result: None,
                at_us: at_us + 1,
                key: key(&id),
            });
        }
        events
    }

    fn open(dir: &TempDir) -> SqliteJournal {
        SqliteJournal::open(dir.path(), SyncMode::Off).unwrap()
    }

    #[test]
    fn messages_finished_before_retain_are_removed_in_chunks_unfinished_never() {
        let dir = TempDir::new("retain");
        let j = open(&dir);
        j.append(&finished("old", 25, 1_000, 10)).unwrap();
        j.append(&finished("new", 5, 9_000, 10)).unwrap();
        j.append(&[Event::accepted(10, request("s", "open", "F"))])
            .unwrap();
        let policy = Policy {
            retain_us: 5_000,
            max_bytes: u64::MAX,
            chunk: 10,
        };
        let mut pauses = 0;
        let pass = run_pass(&j, &policy, 10_000, &mut |_| {
            pauses += 1;
            true
        })
        .unwrap();
        assert_eq!(pass.expired, 25);
        assert_eq!(pass.over_size, 0);
        assert_eq!(pauses, 2, "three transactions: 10, 10 and 5");
        assert!(j.history("s", "old0").unwrap().is_empty());
        assert_eq!(j.history("s", "new0").unwrap().len(), 2);
        assert_eq!(
            j.unfinished().unwrap().len(),
            1,
            "the oldest of all is kept"
        );

        // A stop between two transactions ends the pass there.
        j.append(&finished("more", 25, 2_000, 10)).unwrap();
        let pass = run_pass(&j, &policy, 10_000, &mut |_| false).unwrap();
        assert_eq!((pass.expired, pass.stopped), (10, true));
    }

    #[test]
    fn over_the_size_the_oldest_finished_go_first_until_under() {
        let dir = TempDir::new("size");
        let j = open(&dir);
        j.append(&[Event::accepted(1, request("s", "open", "F"))])
            .unwrap();
        j.append(&finished("a", 100, 100, 4_000)).unwrap();
        j.append(&finished("b", 100, 200, 4_000)).unwrap();
        let full = j.data_bytes().unwrap();
        // Room for about half of them.
        let policy = Policy {
            retain_us: u64::MAX,
            max_bytes: full - 100 * 4_000,
            chunk: 10,
        };
        let pass = run_pass(&j, &policy, 1_000, &mut |_| true).unwrap();
        assert_eq!(pass.expired, 0);
        assert!(
            (80..=130).contains(&pass.over_size),
            "about the older half: {pass:?}"
        );
        assert!(pass.data_bytes <= policy.max_bytes, "{pass:?}");
        assert!(!pass.over_size_unfinished);
        assert!(j.history("s", "a0").unwrap().is_empty(), "oldest first");
        assert_eq!(j.history("s", "b99").unwrap().len(), 2, "newest kept");
        assert_eq!(j.unfinished().unwrap().len(), 1);

        // Too small for even the unfinished: every finished one goes, the
        // unfinished stays, and the pass says so.
        let tiny = Policy {
            max_bytes: 1,
            ..policy
        };
        let pass = run_pass(&j, &tiny, 1_000, &mut |_| true).unwrap();
        assert!(pass.over_size_unfinished, "{pass:?}");
        assert_eq!(j.stats().unwrap().completed, 0);
        assert_eq!(j.unfinished().unwrap().len(), 1);
    }

    #[test]
    fn the_thread_runs_passes_and_stops_promptly() {
        let dir = TempDir::new("thread");
        let j = open(&dir);
        j.append(&finished("x", 3, 1, 10)).unwrap();
        j.append(&[Event::accepted(1, request("s", "open", "F"))])
            .unwrap();
        let config = JournalConfig {
            retain: Duration::ZERO,
            compact_every: Duration::from_millis(10),
            ..JournalConfig::default()
        };
        let retention =
            Retention::start(&Location::Sqlite(dir.path().to_owned()), &config, None).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while j.stats().unwrap().completed > 0 {
            assert!(Instant::now() < deadline, "retention did not run");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(j.unfinished().unwrap().len(), 1);
        let stopping = Instant::now();
        retention.stop();
        assert!(stopping.elapsed() < Duration::from_secs(1));

        // Stopped in the middle of a long interval: no waiting it out.
        let hourly = JournalConfig {
            compact_every: Duration::from_secs(3600),
            ..config
        };
        let retention =
            Retention::start(&Location::Sqlite(dir.path().to_owned()), &hourly, None).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let stopping = Instant::now();
        drop(retention);
        assert!(stopping.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_writer_beside_a_long_compaction_is_not_starved() {
        let dir = TempDir::new("beside");
        let j = SqliteJournal::open(dir.path(), SyncMode::Normal).unwrap();
        for batch in 0..10 {
            j.append(&finished(&format!("{batch}-"), 2_000, 1, 10))
                .unwrap();
        }
        let config = JournalConfig {
            retain: Duration::ZERO,
            compact_every: Duration::from_millis(1),
            sync: SyncMode::Normal,
            ..JournalConfig::default()
        };
        let retention = Retention::start_with(
            SqliteJournal::open_beside(dir.path(), SyncMode::Normal).unwrap(),
            Policy {
                chunk: 500,
                ..Policy::from_config(&config)
            },
            Duration::from_millis(1),
        )
        .unwrap();
        let mut slowest = Duration::ZERO;
        let mut n = 0;
        while j.stats().unwrap().completed > 0 {
            let started = Instant::now();
            j.append(&[Event::accepted(2, request("s", &format!("w{n}"), "F"))])
                .expect("the writer gets the lock");
            slowest = slowest.max(started.elapsed());
            n += 1;
        }
        drop(retention);
        assert_eq!(j.unfinished().unwrap().len(), n);
        eprintln!("{n} appends beside compaction, the slowest took {slowest:?}");
        assert!(slowest < Duration::from_secs(2), "{slowest:?}");
    }
}
