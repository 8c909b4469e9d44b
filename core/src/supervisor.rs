//! Supervision of worker processes: each worker slot runs one process at a
//! time and starts a new one, with exponential backoff, when it exits.
//!
//! Each worker start gets a fresh identity (a reused one would silently take
//! over the previous connection's messages on the Subject's ROUTER). A
//! worker's stdin is a pipe from the node: when the node goes away — even by
//! `kill -9` — the pipe closes and the worker stops, so no orphan is left.
//! At shutdown the supervisor closes that pipe, waits for the worker to
//! finish its batch, and kills it after a grace period.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::{broadcast, mpsc};
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::worker;

/// How to start a worker process; `--identity ID` is appended per start.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Restart timing.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// A worker that ran this long is healthy: its next restart is quick.
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

/// Runs `count` worker slots until `shutdown` is cancelled and every worker
/// has stopped. A pid received on `kill` is killed if it is one of ours (a
/// hung worker, found by the Subject), and its slot starts a new one.
pub async fn run(
    count: usize,
    command: WorkerCommand,
    backoff: Backoff,
    shutdown: CancellationToken,
    mut kill: mpsc::Receiver<u32>,
) {
    let (kill_tx, _) = broadcast::channel::<u32>(64);
    let tracker = TaskTracker::new();
    for slot in 0..count {
        tracker.spawn(run_slot(
            slot,
            command.clone(),
            backoff,
            shutdown.clone(),
            kill_tx.subscribe(),
        ));
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

async fn run_slot(
    slot: usize,
    command: WorkerCommand,
    backoff: Backoff,
    shutdown: CancellationToken,
    mut kill: broadcast::Receiver<u32>,
) {
    let node = std::process::id();
    let mut delay = backoff.initial;
    for generation in 1.. {
        let identity = worker::identity(slot, generation, node);
        let started = Instant::now();
        match spawn(&command, &identity) {
            Ok(mut child) => {
                // Held here, not in `child`: `Child::wait` closes the stdin it
                // holds, which the worker would take as the node going away.
                let pipe = child.stdin.take();
                let pid = child.id().unwrap_or_default();
                tracing::info!(slot, pid, %identity, "worker started");
                let status = loop {
                    tokio::select! {
                        status = child.wait() => break Some(status),
                        () = shutdown.cancelled() => break None,
                        target = kill.recv() => {
                            if target.is_ok_and(|t| t == pid) {
                                tracing::warn!(slot, pid, "killing a hung worker");
                                let _ = child.start_kill();
                            }
                        }
                    }
                };
                match status {
                    Some(status) => {
                        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                        if started.elapsed() >= backoff.reset_after {
                            delay = backoff.initial;
                        }
                        tracing::warn!(slot, pid, %identity, %status, restart_in_ms = delay.as_millis() as u64, "worker exited");
                    }
                    None => {
                        drop(pipe);
                        stop(child, backoff.grace).await;
                        tracing::info!(slot, pid, "worker stopped");
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::error!(slot, program = %command.program.display(), error = %e, "cannot start worker");
            }
        }
        tokio::select! {
            () = sleep(delay) => {}
            () = shutdown.cancelled() => return,
        }
        delay = (delay * 2).min(backoff.max);
    }
}

fn spawn(command: &WorkerCommand, identity: &str) -> std::io::Result<Child> {
    Command::new(&command.program)
        .args(&command.args)
        .args(["--identity", identity])
        .stdin(Stdio::piped())
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
