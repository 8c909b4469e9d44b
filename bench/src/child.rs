//! The benchmark's child processes and the lines they exchange with the
//! driver ([`super::driver`]) on their standard input and output.
//!
//! A service process (`zmanager bench-client`):
//! 1. connects and warms up, then prints `ready`;
//! 2. waits for a `go` line on stdin, runs, and prints `progress N` lines
//!    (results so far) every 100 ms;
//! 3. prints `done <LoadResult as JSON>` (or `failed <reason>`), then waits
//!    for stdin to close before exiting, so the driver can read its CPU time
//!    and memory from `/proc` while it is still there. Stdin closing before
//!    it is done (the driver killed) stops it at once.
//!
//! The node is started with `up --exit-with-parent`: it stops when the
//! driver's end of its stdin closes, so no process outlives a driver that
//! was killed.
//!
//! The raw baseline (`zmanager bench-raw`): the receiver prints
//! `bound <endpoint>`, then `done <RawResult as JSON>`; the sender sends and
//! then waits for stdin to close (zmq.rs has no linger: a sender that exits
//! early loses what is still queued).

use std::io::{BufRead, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use super::BenchError;
use super::load::{LoadGenerator, LoadOptions};
use super::raw;

fn runtime() -> Result<tokio::runtime::Runtime, BenchError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::Io("cannot start a runtime".to_owned(), e))
}

/// Prints one line to stdout at once (the driver reads line by line).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// How often a running service says how far it is.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// A thread that calls `report` with the count every `every`, until
/// stopped; [`Reporter::stop`] returns at once, not at the next report.
struct Reporter {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Reporter {
    fn start(
        count: Arc<AtomicU64>,
        every: Duration,
        report: impl Fn(u64) + Send + 'static,
    ) -> Self {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                report(count.load(Ordering::Relaxed));
            }
        });
        Self { stop, thread }
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// Blocks until stdin closes (the driver's signal to exit).
fn wait_for_stdin_close() {
    let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
}

/// A service process: `warmup` requests first (not measured), then
/// `requests` with `in_flight` outstanding.
pub fn service(
    options: &LoadOptions,
    warmup: u64,
    requests: u64,
    in_flight: usize,
) -> Result<(), BenchError> {
    let rt = runtime()?;
    // One thread reads stdin: the `go` line, then the end of input. If the
    // driver goes away (killed) before this process is done, it stops at
    // once rather than push on alone against the node.
    let done = Arc::new(AtomicBool::new(false));
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<String>();
    let stdin_reader = std::thread::spawn({
        let done = Arc::clone(&done);
        move || {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            let _ = go_tx.send(line);
            wait_for_stdin_close();
            if !done.load(Ordering::SeqCst) {
                eprintln!("the benchmark driver went away; stopping");
                std::process::exit(1);
            }
        }
    });
    let outcome = rt.block_on(async {
        let mut generator = LoadGenerator::connect(options).await?;
        if warmup > 0 {
            generator.run(warmup, in_flight, &AtomicU64::new(0)).await?;
        }
        say("ready");
        let go = go_rx.await.unwrap_or_default();
        if go.trim() != "go" {
            return Err(BenchError::Protocol(format!(
                "expected `go` from the driver, got {go:?}"
            )));
        }
        let progress = Arc::new(AtomicU64::new(0));
        let reporter = Reporter::start(Arc::clone(&progress), PROGRESS_EVERY, |n| {
            say(&format!("progress {n}"));
        });
        let result = generator.run(requests, in_flight, &progress).await;
        // At once: `done` must not wait for the next progress line (it
        // did, and every run's time was rounded up to 100 ms steps).
        reporter.stop();
        result
    });
    match outcome {
        Ok(result) => {
            let json = serde_json::to_string(&result)
                .map_err(|e| BenchError::Protocol(format!("cannot write the result: {e}")))?;
            done.store(true, Ordering::SeqCst);
            say(&format!("done {json}"));
            // Stay until the driver has read this process's CPU and memory
            // and closes stdin.
            let _ = stdin_reader.join();
            Ok(())
        }
        Err(e) => {
            say(&format!("failed {e}"));
            Err(e)
        }
    }
}

/// The raw baseline's receiving process.
pub fn raw_receiver(bind: &str, count: u64) -> Result<(), BenchError> {
    let rt = runtime()?;
    let result = rt.block_on(async {
        let receiver = raw::Receiver::bind(bind).await?;
        say(&format!("bound {}", receiver.endpoint));
        receiver.count(count).await
    })?;
    let json = serde_json::to_string(&result)
        .map_err(|e| BenchError::Protocol(format!("cannot write the result: {e}")))?;
    say(&format!("done {json}"));
    Ok(())
}

/// The raw baseline's sending process: sends, then keeps its socket open
/// until stdin closes.
pub fn raw_sender(connect: &str, count: u64, size: usize) -> Result<(), BenchError> {
    let rt = runtime()?;
    rt.block_on(async {
        let socket = raw::send(connect, count, size).await?;
        let _ = tokio::task::spawn_blocking(wait_for_stdin_close).await;
        drop(socket);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Stopping does not wait out the period: a run's end is not delayed
    /// to the next report (the period here is far longer than any stop).
    #[test]
    fn a_reporter_stops_at_once_and_reports_while_it_runs() {
        let count = Arc::new(AtomicU64::new(7));
        let (seen_tx, seen) = mpsc::channel();
        let reporter = Reporter::start(Arc::clone(&count), Duration::from_millis(20), move |n| {
            let _ = seen_tx.send(n);
        });
        assert_eq!(seen.recv_timeout(Duration::from_secs(10)), Ok(7));
        reporter.stop();
        let idle = Reporter::start(count, Duration::from_secs(60), |_| {});
        let asked = Instant::now();
        idle.stop();
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "{:?}",
            asked.elapsed()
        );
    }
}
