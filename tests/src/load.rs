//! A windowed load of Echo requests whose every result is checked.

use std::time::{Duration, Instant};

use zmanager_client::wire::envelope::Status;

use crate::checker::{Checker, Report};
use crate::client::RawClient;

/// Receives until every request `checker` was told about is answered, or
/// `limit` passes; counts what arrives.
pub async fn collect(client: &mut RawClient, checker: &mut Checker, limit: Duration) {
    let start = Instant::now();
    while checker.missing() > 0 && start.elapsed() < limit {
        if let Some(r) = client.recv(Duration::from_millis(200)).await {
            checker.received(&r.envelope.id);
        }
    }
}

/// Pushes `total` Echo requests (payload: their number) with at most
/// `window` unanswered, checks each result is its own request's, and calls
/// `chaos` about every `every` while sending. Gives up after `limit`.
pub async fn echo_load(
    client: &mut RawClient,
    total: usize,
    window: usize,
    limit: Duration,
    every: Duration,
    chaos: impl FnMut(),
) -> Report {
    let start = Instant::now();
    let mut load = EchoLoad::new(client, window);
    load.drive(|sent| sent < total && start.elapsed() < limit, every, chaos)
        .await;
    load.finish(limit.saturating_sub(start.elapsed())).await
}

/// An Echo load run in stages on one client (a quiet one, then one with
/// chaos, …), the window kept full across them; each stage says how many
/// results it received, so a test can compare throughput within one run.
#[allow(missing_debug_implementations)] // holds a RawClient
pub struct EchoLoad<'c> {
    client: &'c mut RawClient,
    checker: Checker,
    window: usize,
    sent: usize,
}

/// What one stage of an [`EchoLoad`] did.
#[derive(Debug, Clone, Copy)]
pub struct Stage {
    /// Requests answered (first results) during the stage.
    pub answered: usize,
    pub elapsed: Duration,
}

impl Stage {
    /// Answers per second.
    pub fn throughput(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

impl<'c> EchoLoad<'c> {
    pub fn new(client: &'c mut RawClient, window: usize) -> Self {
        Self {
            client,
            checker: Checker::default(),
            window,
            sent: 0,
        }
    }

    /// Keeps `window` requests unanswered for `duration`, calling `chaos`
    /// about every `every`.
    pub async fn run_for(
        &mut self,
        duration: Duration,
        every: Duration,
        chaos: impl FnMut(),
    ) -> Stage {
        let start = Instant::now();
        self.drive(|_| start.elapsed() < duration, every, chaos)
            .await
    }

    /// Sends while `more(sent so far)` holds, and receives until it does not.
    async fn drive(
        &mut self,
        mut more: impl FnMut(usize) -> bool,
        every: Duration,
        mut chaos: impl FnMut(),
    ) -> Stage {
        let start = Instant::now();
        let answered_before = self.checker.answered();
        let mut next_chaos = start + every;
        while more(self.sent) {
            while self.checker.missing() < self.window && more(self.sent) {
                let id = format!("m{}", self.sent);
                self.checker.sent(&id);
                self.client.request("Echo", &id, &self.sent).await;
                self.sent += 1;
            }
            self.receive(Duration::from_millis(100)).await;
            if more(self.sent) && Instant::now() >= next_chaos {
                chaos();
                next_chaos = Instant::now() + every;
            }
        }
        Stage {
            answered: self.checker.answered() - answered_before,
            elapsed: start.elapsed(),
        }
    }

    /// Waits up to `limit` for whatever was received so far, then waits for
    /// late duplicates (they still count); the run's report.
    pub async fn finish(mut self, limit: Duration) -> Report {
        let start = Instant::now();
        while self.checker.missing() > 0 && start.elapsed() < limit {
            self.receive(Duration::from_millis(100)).await;
        }
        while let Some(r) = self.client.recv(Duration::from_millis(500)).await {
            self.checker.received(&r.envelope.id);
        }
        self.checker.report()
    }

    /// Checks and counts what arrives within `wait`, and whatever is
    /// already there after it.
    async fn receive(&mut self, wait: Duration) {
        let mut next = self.client.recv(wait).await;
        while let Some(r) = next {
            assert_eq!(r.envelope.status, Status::Ok, "{:?}", r.envelope.error);
            let n: u64 = zmanager_sdk::decode(&r.payload).expect("echoed payload");
            assert_eq!(format!("m{n}"), r.envelope.id, "payload of another request");
            self.checker.received(&r.envelope.id);
            next = self.client.try_recv();
        }
    }
}
