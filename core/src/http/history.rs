//! The node's last minutes, one sample a second, for the console's live
//! chart (`GET /v1/overview`): how many requests were accepted, ended and
//! failed in each second, and how long the ones that ended took.
//!
//! A task of the HTTP server asks the Subject for its figures once a
//! second (one [`Ask`](crate::subject::Ask) between two of its turns,
//! nothing on the path of messages) and keeps the differences of
//! consecutive figures, [`KEPT`] of them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::HttpState;
use crate::buckets::Buckets;
use crate::subject::{LATENCY_BOUNDS_US, Stats};

/// Samples kept: ten minutes of them.
pub const KEPT: usize = 600;

/// How often a sample is taken.
pub const EVERY: Duration = Duration::from_secs(1);

/// One second of the node's life (figures per second, over the time since
/// the sample before it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// When it was taken, µs since the Unix epoch.
    pub at_us: u64,
    /// Requests accepted per second.
    pub accepted: f64,
    /// Requests ended per second (results, error results, dead letters).
    pub ended: f64,
    /// Of those, the ones that ended with an error.
    pub failed: f64,
    /// Requests ended since the node started, at that moment.
    pub ended_total: u64,
    /// Median and 99th percentile of how long the requests that ended in
    /// this second took, from acceptance; `None` when none ended.
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    /// What the node held at that moment.
    pub in_flight: usize,
    pub pending: usize,
}

/// The samples, oldest first.
#[derive(Debug, Clone, Default)]
pub struct History(Arc<Mutex<VecDeque<Sample>>>);

impl History {
    pub fn samples(&self) -> Vec<Sample> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }

    fn push(&self, sample: Sample) {
        let mut samples = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }
}

/// Totals of every flow: ended, failed, and their latencies.
struct Totals {
    accepted: u64,
    ended: u64,
    failed: u64,
    latency: Buckets,
}

fn totals(stats: &Stats) -> Totals {
    let mut latency = Buckets::new(&LATENCY_BOUNDS_US);
    let (mut ended, mut failed) = (0, 0);
    for flow in stats.flows.values() {
        for (outcome, n) in &flow.ended {
            ended += n;
            if *outcome != "ok" {
                failed += n;
            }
        }
        latency.add(&flow.latency);
    }
    Totals {
        accepted: stats.counters.accepted,
        ended,
        failed,
        latency,
    }
}

/// The sample of the interval between `before` and `now`, `seconds` long.
fn between(before: &Totals, now: &Totals, stats: &Stats, seconds: f64, at_us: u64) -> Sample {
    let per_second = |now: u64, before: u64| now.saturating_sub(before) as f64 / seconds;
    let interval = now.latency.since(&before.latency);
    Sample {
        at_us,
        accepted: per_second(now.accepted, before.accepted),
        ended: per_second(now.ended, before.ended),
        failed: per_second(now.failed, before.failed),
        ended_total: now.ended,
        p50_us: interval.quantile(0.5),
        p99_us: interval.quantile(0.99),
        in_flight: stats.in_flight,
        pending: stats.pending,
    }
}

/// Samples the node every [`EVERY`] into `history` until `stop`.
pub(super) async fn sample(state: HttpState, history: History, stop: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut before: Option<(Instant, Totals)> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(stats) = state.ask().await else {
            continue; // the Subject is busy or stopping: a gap in the chart
        };
        let at = Instant::now();
        let now = totals(&stats);
        if let Some((then, earlier)) = &before {
            let seconds = at.duration_since(*then).as_secs_f64().max(1e-3);
            history.push(between(
                earlier,
                &now,
                &stats,
                seconds,
                crate::wire::envelope::now_us(),
            ));
        }
        before = Some((at, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subject::FlowStats;

    fn ended(stats: &mut Stats, flow: &str, outcome: &'static str, n: u64, took_us: u64) {
        let figures: &mut FlowStats = stats.flows.entry(flow.to_owned()).or_default();
        *figures.ended.entry(outcome).or_default() += n;
        for _ in 0..n {
            figures.latency.record(took_us);
        }
    }

    #[test]
    fn a_sample_is_the_rate_of_one_interval_over_every_flow() {
        let mut stats = Stats::default();
        ended(&mut stats, "A", "ok", 10, 90);
        let before = totals(&stats);
        stats.counters.accepted = 30;
        ended(&mut stats, "A", "ok", 10, 400);
        ended(&mut stats, "B", "action_failed", 10, 400);
        stats.in_flight = 3;
        let sample = between(&before, &totals(&stats), &stats, 2.0, 7);
        assert_eq!(sample.accepted, 15.0, "30 in two seconds");
        assert_eq!(sample.ended, 10.0, "20 in two seconds, both flows");
        assert_eq!(sample.failed, 5.0);
        assert_eq!(sample.ended_total, 30);
        // Only this interval's latencies: 400 µs is in the 250..500 bucket.
        let p50 = sample.p50_us.unwrap();
        assert!((250..=500).contains(&p50), "{p50}");
        assert_eq!((sample.in_flight, sample.at_us), (3, 7));
    }

    #[test]
    fn the_history_keeps_the_latest_samples() {
        let history = History::default();
        for n in 0..KEPT as u64 + 5 {
            history.push(Sample {
                at_us: n,
                accepted: 0.0,
                ended: 0.0,
                failed: 0.0,
                ended_total: 0,
                p50_us: None,
                p99_us: None,
                in_flight: 0,
                pending: 0,
            });
        }
        let samples = history.samples();
        assert_eq!(samples.len(), KEPT);
        assert_eq!(samples[0].at_us, 5);
        assert_eq!(samples[KEPT - 1].at_us, KEPT as u64 + 4);
    }
}
