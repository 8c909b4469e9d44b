//! A windowed load of Echo requests whose every result is checked.

use std::time::{Duration, Instant};

use zmanager::envelope::Status;

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
    mut chaos: impl FnMut(),
) -> Report {
    let mut checker = Checker::default();
    let mut sent = 0usize;
    let start = Instant::now();
    let mut next_chaos = start + every;
    while (sent < total || checker.missing() > 0) && start.elapsed() < limit {
        while sent < total && checker.missing() < window {
            let id = format!("m{sent}");
            checker.sent(&id);
            client.request("Echo", &id, &sent).await;
            sent += 1;
        }
        let mut next = client.recv(Duration::from_millis(100)).await;
        while let Some(r) = next {
            assert_eq!(r.envelope.status, Status::Ok, "{:?}", r.envelope.error);
            let n: u64 = zmanager_sdk::decode(&r.payload).expect("echoed payload");
            assert_eq!(format!("m{n}"), r.envelope.id, "payload of another request");
            checker.received(&r.envelope.id);
            next = client.try_recv();
        }
        if Instant::now() >= next_chaos && sent < total {
            chaos();
            next_chaos = Instant::now() + every;
        }
    }
    // Late duplicates still count.
    while let Some(r) = client.recv(Duration::from_millis(500)).await {
        checker.received(&r.envelope.id);
    }
    checker.report()
}
