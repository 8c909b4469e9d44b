//! Supervision of worker processes: each worker slot runs one process at a
//! time and starts a new one when it exits — at once if it had served, with
//! exponential backoff if it died before it did ([`RestartPolicy`]).
//!
//! Each worker start gets a fresh identity (a reused one would silently take
//! over the previous connection's messages on the Subject's ROUTER). A
//! worker's stdin is a pipe from the node: when the node goes away — even by
//! `kill -9` — the pipe closes and the worker stops, so no orphan is left.
//! Its stdout is a pipe too, on which it says when it first served
//! ([`worker::SERVING`]); anything else it writes there is copied to the
//! node's stdout. At shutdown the supervisor closes the stdin pipe, waits
//! for the worker to finish its batch, and kills it after a grace period.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::worker;

/// How to start a worker process; `--identity ID` is appended per start.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Keys written on each worker's stdin as it starts (with
    /// `--keys-on-stdin` in `args`): never on its command line, which every
    /// user of the machine can read.
    pub keys: Option<crate::transport::ClientKeys>,
    /// Environment variables set on each worker (the node's log format,
    /// `ZMANAGER_LOG_FORMAT`).
    pub env: Vec<(String, String)>,
}

/// Restart timing (see [`RestartPolicy`] for how it is used).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The delay before restarting a worker that was healthy, and the first
    /// delay of a worker that was not.
    pub initial: Duration,
    /// The longest delay, reached by doubling while workers keep dying
    /// before they are healthy.
    pub max: Duration,
    /// A worker that ran this long is healthy even if it never returned a
    /// result (a node with no work to give it).
    pub reset_after: Duration,
    /// How long a stopping worker may take before it is killed.
    pub grace: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            reset_after: Duration::from_secs(10),
            grace: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The delays of a crash loop: `initial` doubled up to `max`, without
    /// jitter (`docs/reliability.md` gives them exactly: 100, 200, 400 ms…).
    pub fn restarts(&self) -> crate::backoff::Backoff {
        crate::backoff::Backoff::doubling(self.initial, self.max)
    }
}

/// When a slot starts its next worker, from how the last one ended.
///
/// A worker is *healthy* once it has served: it returned results to the
/// Subject (it says so on its stdout, [`worker::SERVING`]). That proves
/// everything a crash loop lacks — it loaded its flows and components,
/// connected, announced itself and ran actions — and nothing less does:
/// a worker that dies on loading a component never gets to `READY`, but
/// one whose every action aborts gets past `READY` and dies within
/// milliseconds of it, so `READY` alone would restart that one every
/// `initial`. A time alone (ran 1 s) would class a worker that takes 2 s to
/// start and then dies as healthy, and a worker killed after 0.5 s of
/// serving as a crash loop. A worker that ran `reset_after` is healthy
/// too, served or not: on a node with no work a worker cannot serve, and
/// one that lived that long is no crash loop.
///
/// A healthy worker's slot restarts after `initial`, whatever came before;
/// so a node whose workers are killed from outside keeps about as many alive
/// as it has slots. A worker that dies before it is healthy waits `initial`,
/// then twice as long at every such death in a row, up to `max`, so a crash
/// loop costs at most one start per `max` per slot.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    delays: crate::backoff::Backoff,
    reset_after: Duration,
    /// Workers of this slot in a row that died before they were healthy.
    failures: u32,
}

impl RestartPolicy {
    pub fn new(backoff: Backoff) -> Self {
        Self {
            delays: backoff.restarts(),
            reset_after: backoff.reset_after,
            failures: 0,
        }
    }

    /// The delay before the next start, after a worker that ran `ran_for`
    /// and had (`served`) or had not returned results ended — or could not
    /// be started (`Duration::ZERO`, `false`).
    pub fn after_exit(&mut self, ran_for: Duration, served: bool) -> Duration {
        if served || ran_for >= self.reset_after {
            self.failures = 0;
            return self.delays.initial;
        }
        self.failures = self.failures.saturating_add(1);
        self.delays.base(self.failures)
    }
}

/// Runs `count` worker slots until `shutdown` is cancelled and every worker
/// has stopped. A pid received on `kill` is killed if it is one of ours (a
/// hung worker, found by the Subject), and its slot starts a new one.
/// `restarts` counts the starts after the first of each slot.
pub async fn run(
    count: usize,
    command: WorkerCommand,
    backoff: Backoff,
    shutdown: CancellationToken,
    mut kill: mpsc::Receiver<u32>,
    exited: mpsc::Sender<String>,
    restarts: Arc<AtomicU64>,
) {
    let (kill_tx, _) = broadcast::channel::<u32>(64);
    let tracker = TaskTracker::new();
    for slot in 0..count {
        let mut process = Process {
            slot,
            node: std::process::id(),
            command: command.clone(),
            grace: backoff.grace,
            shutdown: shutdown.clone(),
            kill: kill_tx.subscribe(),
            exited: exited.clone(),
        };
        let shutdown = shutdown.clone();
        let restarts = Arc::clone(&restarts);
        tracker.spawn(async move {
            run_slot(slot, &mut process, backoff, &shutdown, &restarts).await;
        });
    }
    tracker.close();
    loop {
        tokio::select! {
            () = tracker.wait() => return,
            pid = kill.recv() => match pid {
                Some(pid) => { let _ = kill_tx.send(pid); }
                None => { tracker.wait().await; return; }
            },
        }
    }
}

/// How one worker of a slot ended.
#[derive(Debug)]
enum Ended {
    /// It exited (or was killed) by itself; the slot starts another.
    Exited {
        pid: u32,
        identity: String,
        status: String,
        /// It returned results before it ended.
        served: bool,
    },
    /// It could not be started.
    NotStarted,
    /// The node is stopping and so did the worker.
    Stopped,
}

/// Starts a slot's workers one at a time: a trait so that the restart loop
/// is tested with paused time and no processes.
trait Launch {
    /// Starts generation `generation` of the slot's worker and waits for it
    /// to end.
    async fn launch(&mut self, generation: u64) -> Ended;
}

/// Runs a slot's workers, one after another, until `shutdown`; counts
/// each start after the first in `restarts`.
async fn run_slot(
    slot: usize,
    launcher: &mut impl Launch,
    backoff: Backoff,
    shutdown: &CancellationToken,
    restarts: &AtomicU64,
) {
    let mut policy = RestartPolicy::new(backoff);
    for generation in 1.. {
        if generation > 1 {
            restarts.fetch_add(1, Ordering::Relaxed);
        }
        let started = Instant::now();
        let ended = launcher.launch(generation).await;
        let ran_for = started.elapsed();
        let delay = match ended {
            Ended::Exited {
                pid,
                identity,
                status,
                served,
            } => {
                let delay = policy.after_exit(ran_for, served);
                tracing::warn!(slot, pid, %identity, %status, ran_ms = ran_for.as_millis() as u64, served, restart_in_ms = delay.as_millis() as u64, "worker exited");
                delay
            }
            Ended::NotStarted => policy.after_exit(Duration::ZERO, false),
            Ended::Stopped => return,
        };
        tokio::select! {
            () = sleep(delay) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// A slot's worker processes.
#[derive(Debug)]
struct Process {
    slot: usize,
    /// This node's pid, part of every worker identity.
    node: u32,
    command: WorkerCommand,
    grace: Duration,
    shutdown: CancellationToken,
    kill: broadcast::Receiver<u32>,
    /// Told the identity of each worker that exited by itself.
    exited: mpsc::Sender<String>,
}

impl Launch for Process {
    async fn launch(&mut self, generation: u64) -> Ended {
        let slot = self.slot;
        let identity = worker::identity(slot, generation, self.node);
        let mut child = match spawn(&self.command, &identity) {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(slot, program = %self.command.program.display(), error = %e, "cannot start worker");
                return Ended::NotStarted;
            }
        };
        // Held here, not in `child`: `Child::wait` closes the stdin it
        // holds, which the worker would take as the node going away.
        let mut pipe = child.stdin.take();
        if let (Some(keys), Some(stdin)) = (&self.command.keys, pipe.as_mut())
            && let Err(e) = stdin.write_all(keys.to_line().as_bytes()).await
        {
            tracing::warn!(slot, error = %e, "cannot give the worker its keys");
        }
        let (served_tx, mut served) = oneshot::channel();
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(relay_stdout(stdout, served_tx));
        }
        let pid = child.id().unwrap_or_default();
        tracing::info!(slot, pid, %identity, "worker started");
        let status = loop {
            tokio::select! {
                status = child.wait() => {
                    // Its messages go elsewhere now, not after its silence.
                    let _ = self.exited.try_send(identity.clone());
                    break status;
                }
                () = self.shutdown.cancelled() => {
                    drop(pipe);
                    stop(child, self.grace).await;
                    tracing::info!(slot, pid, "worker stopped");
                    return Ended::Stopped;
                }
                target = self.kill.recv() => {
                    if target.is_ok_and(|t| t == pid) {
                        tracing::warn!(slot, pid, "killing a hung worker");
                        let _ = child.start_kill();
                    }
                }
            }
        };
        // The line may still be in the pipe: read on until it closes, which
        // is at once unless a process the worker started holds it.
        let served = match served.try_recv() {
            Ok(()) => true,
            Err(oneshot::error::TryRecvError::Closed) => false,
            Err(oneshot::error::TryRecvError::Empty) => {
                matches!(timeout(STDOUT_GRACE, &mut served).await, Ok(Ok(())))
            }
        };
        Ended::Exited {
            pid,
            identity,
            status: status.map_or_else(|e| e.to_string(), |s| s.to_string()),
            served,
        }
    }
}

/// How long, after a worker exited, its slot waits for the rest of its
/// stdout.
const STDOUT_GRACE: Duration = Duration::from_millis(100);

/// Reads a worker's stdout until it closes: [`worker::SERVING`] is reported
/// on `served`, every other line copied to the node's stdout.
async fn relay_stdout(stdout: ChildStdout, served: oneshot::Sender<()>) {
    let mut served = Some(served);
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.strip_suffix(b"\n") == Some(worker::SERVING.as_bytes()) {
            if let Some(served) = served.take() {
                let _ = served.send(());
            }
            continue;
        }
        // Rare (a component printing): a blocking write, off the runtime.
        let copy = line.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let mut out = std::io::stdout().lock();
            out.write_all(&copy).and_then(|()| out.flush())
        })
        .await;
    }
}

fn spawn(command: &WorkerCommand, identity: &str) -> std::io::Result<Child> {
    Command::new(&command.program)
        .args(&command.args)
        .args(["--identity", identity])
        .envs(command.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
}

/// Waits for a worker whose stdin was closed (its signal to finish and
/// exit); kills it if it is still running after `grace`.
async fn stop(mut child: Child, grace: Duration) {
    if timeout(grace, child.wait()).await.is_err() {
        tracing::warn!(
            pid = child.id().unwrap_or_default(),
            "worker did not stop in time; killing it"
        );
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> RestartPolicy {
        RestartPolicy::new(Backoff::default())
    }

    #[test]
    fn a_worker_dying_before_it_serves_backs_off_exponentially_up_to_max() {
        let mut p = policy();
        let delays: Vec<u64> = (0..10)
            .map(|_| p.after_exit(5 * MS, false).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [
                100, 200, 400, 800, 1_600, 3_200, 6_400, 10_000, 10_000, 10_000
            ]
        );
        // Forever, without overflowing.
        for _ in 0..100 {
            assert_eq!(p.after_exit(MS, false), Duration::from_secs(10));
        }
    }

    #[test]
    fn a_worker_that_served_restarts_after_initial_whatever_came_before() {
        let mut p = policy();
        for _ in 0..20 {
            p.after_exit(MS, false);
        }
        // Killed 4 s into serving, again and again (the case).
        for _ in 0..100 {
            assert_eq!(p.after_exit(4_000 * MS, true), 100 * MS);
        }
        // Served for a moment only: still healthy.
        assert_eq!(p.after_exit(MS, true), 100 * MS);
        // A crash loop after that starts its backoff from the beginning.
        assert_eq!(p.after_exit(MS, false), 100 * MS);
        assert_eq!(p.after_exit(MS, false), 200 * MS);
    }

    #[test]
    fn a_worker_that_ran_reset_after_is_healthy_without_serving() {
        let mut p = policy();
        for _ in 0..5 {
            p.after_exit(MS, false);
        }
        assert_eq!(p.after_exit(9_999 * MS, false), 3_200 * MS);
        assert_eq!(p.after_exit(10_000 * MS, false), 100 * MS);
        assert_eq!(p.after_exit(MS, false), 100 * MS);
    }

    #[test]
    fn a_worker_that_cannot_start_backs_off() {
        let mut p = policy();
        assert_eq!(p.after_exit(Duration::ZERO, false), 100 * MS);
        assert_eq!(p.after_exit(Duration::ZERO, false), 200 * MS);
    }

    /// Workers that each run a scripted time, serve or not, and exit; it
    /// records when each started, on the (paused) Tokio clock.
    struct Scripted {
        runs: std::vec::IntoIter<(Duration, bool)>,
        epoch: Instant,
        starts: Vec<Duration>,
        shutdown: CancellationToken,
    }

    impl Scripted {
        fn new(runs: Vec<(Duration, bool)>, shutdown: &CancellationToken) -> Self {
            Self {
                runs: runs.into_iter(),
                epoch: Instant::now(),
                starts: Vec::new(),
                shutdown: shutdown.clone(),
            }
        }
    }

    impl Launch for Scripted {
        async fn launch(&mut self, generation: u64) -> Ended {
            self.starts.push(self.epoch.elapsed());
            let Some((ran_for, served)) = self.runs.next() else {
                self.shutdown.cancel();
                return Ended::Stopped;
            };
            sleep(ran_for).await;
            Ended::Exited {
                pid: 0,
                identity: format!("w0.{generation}"),
                status: "signal: 9 (SIGKILL)".to_owned(),
                served,
            }
        }
    }

    /// The start times of a slot whose workers run `runs`, in ms.
    async fn starts(runs: Vec<(Duration, bool)>) -> Vec<u64> {
        let shutdown = CancellationToken::new();
        let mut workers = Scripted::new(runs, &shutdown);
        let restarts = AtomicU64::new(0);
        run_slot(0, &mut workers, Backoff::default(), &shutdown, &restarts).await;
        assert_eq!(
            restarts.load(Ordering::Relaxed),
            workers.starts.len() as u64 - 1,
            "every start after the first is a restart"
        );
        workers
            .starts
            .iter()
            .map(|d| d.as_millis() as u64)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn workers_killed_every_4_s_after_serving_are_replaced_within_100_ms() {
        let runs = vec![(4_000 * MS, true); 6];
        assert_eq!(
            starts(runs).await,
            [0, 4_100, 8_200, 12_300, 16_400, 20_500, 24_600]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn workers_dying_at_start_are_restarted_ever_later() {
        let runs = vec![(10 * MS, false); 9];
        // Each start is the last one's, plus 10 ms of life, plus the delay.
        assert_eq!(
            starts(runs).await,
            [
                0, 110, 320, 730, 1_540, 3_150, 6_360, 12_770, 22_780, 32_790
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_stops_waiting_when_the_node_stops() {
        let shutdown = CancellationToken::new();
        let mut workers = Scripted::new(vec![(MS, false); 20], &shutdown);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            sleep(Duration::from_secs(5)).await;
            stop.cancel();
        });
        let begun = Instant::now();
        run_slot(
            0,
            &mut workers,
            Backoff::default(),
            &shutdown,
            &AtomicU64::new(0),
        )
        .await;
        // Six starts (the last at 3,105 ms); it stops inside the 3.2 s
        // delay after the sixth, not at its end.
        assert_eq!(begun.elapsed(), Duration::from_secs(5));
        assert_eq!(workers.starts.len(), 6);
    }

    /// A slot's launcher running `sh -c script` as its worker.
    fn shell(script: &str) -> (Process, broadcast::Sender<u32>) {
        let (kill, _) = broadcast::channel(4);
        let process = Process {
            slot: 0,
            node: std::process::id(),
            command: WorkerCommand {
                program: "sh".into(),
                args: vec!["-c".to_owned(), script.to_owned()],
                keys: None,
                env: Vec::new(),
            },
            grace: Duration::from_secs(1),
            shutdown: CancellationToken::new(),
            kill: kill.subscribe(),
            exited: mpsc::channel(4).0,
        };
        (process, kill)
    }

    async fn served(script: &str) -> bool {
        let (mut process, _kill) = shell(script);
        match process.launch(1).await {
            Ended::Exited { served, .. } => served,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_worker_serves_when_it_writes_the_serving_line() {
        let line = worker::SERVING;
        // Written just before it dies: still counted.
        assert!(served(&format!("echo '{line}'; exit 3")).await);
        assert!(served(&format!("echo other; echo '{line}'; kill -9 $$")).await);
        assert!(!served("exit 3").await);
        assert!(!served(&format!("echo '{line} and more'")).await);
    }

    #[tokio::test]
    async fn a_worker_the_subject_found_hung_is_killed() {
        let file = std::env::temp_dir().join(format!("zmanager-hung-{}", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let (mut process, kill) = shell(&format!("echo $$ > {}; exec sleep 30", file.display()));
        let launched = tokio::spawn(async move { process.launch(1).await });
        let deadline = Instant::now() + Duration::from_secs(5);
        let pid = loop {
            let written = std::fs::read_to_string(&file).unwrap_or_default();
            if let Ok(pid) = written.trim().parse::<u32>() {
                break pid;
            }
            assert!(Instant::now() < deadline, "the worker did not start");
            sleep(Duration::from_millis(10)).await;
        };
        let _ = kill.send(pid + 1); // another node's
        let _ = kill.send(pid);
        match timeout(Duration::from_secs(5), launched).await {
            Ok(Ok(Ended::Exited { status, served, .. })) => {
                assert!(status.contains("SIGKILL"), "{status}");
                assert!(!served);
            }
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_file(&file);
    }
}
