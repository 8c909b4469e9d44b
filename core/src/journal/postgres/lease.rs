//! The lease: which node runs on a PostgreSQL journal. One row,
//! `journal_owner`, says which generation holds it, who that is and until
//! when. A node claims it when it is free (never held, released, or past
//! its deadline), which makes it the next generation; renews it while it
//! runs (a thread of its own, every third of the lease); and releases it
//! when it stops, so that a standby takes over at once.
//!
//! **Fencing.** Every commit of the node's events carries its generation
//! and locks the row (`FOR SHARE`) in the same statement
//! ([`super::events`]): it writes nothing unless the generation is still
//! the node's. A takeover updates the row, so it waits for a commit in
//! progress, and every commit after it finds another generation. No two
//! nodes ever commit, whatever their clocks, pauses or network say; the
//! deadline only decides when a standby may take over. Times are the
//! database's (`now()`), never a node's clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::Client;

/// How a node holds the lease (`[journal] lease`, `standby`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// How long a claim or renewal holds: a standby takes over at most this
    /// long after the active node stopped renewing (it died, hangs, or is
    /// cut off), plus one poll.
    pub duration: Duration,
    /// Wait for the lease as long as it takes (a standby), rather than at
    /// most one `duration` (time enough for a dead node's own lease to run
    /// out when it is restarted).
    pub standby: bool,
}

impl Default for Lease {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(5),
            standby: false,
        }
    }
}

impl Lease {
    /// How often a waiting node tries to claim: a fifth of the lease,
    /// between 50 ms and 1 s.
    pub(super) fn poll(&self) -> Duration {
        (self.duration / 5).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    fn millis(&self) -> i64 {
        i64::try_from(self.duration.as_millis()).unwrap_or(i64::MAX)
    }
}

/// Who this node is, in the row: its host and process.
pub(super) fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{host} pid {}", std::process::id())
}

/// Claims the lease if it is free: the new generation, or who holds it
/// and for how long yet.
pub(super) fn claim(
    client: &mut Client,
    lease: &Lease,
    holder: &str,
) -> Result<Result<i64, String>, postgres::Error> {
    let claimed = client.query_opt(
        "INSERT INTO journal_owner (id, generation, holder, deadline)
         VALUES (true, 1, $1, now() + $2::bigint * interval '1 millisecond')
         ON CONFLICT (id) DO UPDATE
         SET generation = journal_owner.generation + 1, holder = $1, since = now(),
             deadline = now() + $2::bigint * interval '1 millisecond'
         WHERE journal_owner.deadline <= now()
         RETURNING generation",
        &[&holder, &lease.millis()],
    )?;
    if let Some(row) = claimed {
        return Ok(Ok(row.get(0)));
    }
    let held = client.query_one(
        "SELECT holder, generation, since::text,
                GREATEST(0, EXTRACT(EPOCH FROM deadline - now()) * 1000)::bigint
         FROM journal_owner",
        &[],
    )?;
    Ok(Err(format!(
        "another node holds it: {} (generation {}, since {}), for {} ms more unless it renews",
        held.get::<_, String>(0),
        held.get::<_, i64>(1),
        held.get::<_, String>(2),
        held.get::<_, i64>(3)
    )))
}

/// Gives the lease up now, if `generation` still holds it.
pub(super) fn release(client: &mut Client, generation: i64) -> Result<u64, postgres::Error> {
    client.execute(
        "UPDATE journal_owner SET deadline = now() WHERE generation = $1",
        &[&generation],
    )
}

/// The thread that renews a held lease; stopped when dropped.
#[derive(Debug)]
pub(super) struct Renewer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Renewer {
    /// Renews `generation`'s lease every third of it on a connection of its
    /// own; sets `lost` and stops if another generation holds it.
    pub(super) fn start(
        config: super::Database,
        lease: Lease,
        generation: i64,
        target: String,
        lost: Arc<AtomicBool>,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("journal-lease".into())
            .spawn(move || renew(&config, &lease, generation, &target, &lost, &stopped))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn renew(
    config: &super::Database,
    lease: &Lease,
    generation: i64,
    target: &str,
    lost: &AtomicBool,
    stopped: &mpsc::Receiver<()>,
) {
    let every = lease.duration / 3;
    let mut client: Option<Client> = None;
    loop {
        match stopped.recv_timeout(every) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if client.as_ref().is_none_or(Client::is_closed) {
            // With the journal's timeouts: a renewal that hangs fails.
            client = match super::PostgresJournal::session(
                config,
                target,
                super::SyncMode::Full,
                super::Role::Beside,
            ) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(target_db = %target, error = %e, "journal: cannot reach the database to renew the lease; trying again");
                    continue;
                }
            };
        }
        let Some(c) = client.as_mut() else { continue };
        match c.execute(
            "UPDATE journal_owner SET deadline = now() + $2::bigint * interval '1 millisecond'
             WHERE generation = $1",
            &[&generation, &lease.millis()],
        ) {
            Ok(1) => {}
            Ok(_) => {
                lost.store(true, Ordering::SeqCst);
                tracing::error!(target_db = %target, generation, "journal: another node holds the lease now; this node commits nothing more");
                return;
            }
            Err(e) => {
                tracing::warn!(target_db = %target, error = %super::describe(&e), "journal: renewing the lease failed; trying again");
            }
        }
    }
}
