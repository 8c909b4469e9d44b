//! `zmanager bench --report`: the benchmark over a range of loads, each
//! point measured with the journal off and then on, for the picture
//! [`super::page`] draws.
//!
//! Two axes, each from the command's own point (its in-flight count and
//! payload size): requests in flight (1 → 10,000 by default), and payload
//! size (64 B → 64 KiB), where the raw ZeroMQ rate at the same size is
//! measured too, so bytes per second can be read against what the
//! transport alone moves.

use serde::Serialize;

use super::proc_stats::Machine;
use super::{BenchError, BenchOptions, JournalMode, Latency, Progress, Report};

/// The points to measure.
#[derive(Debug, Clone)]
pub struct Axes {
    /// Requests in flight, at the options' payload size.
    pub in_flight: Vec<usize>,
    /// Payload bytes, at the options' in-flight count.
    pub payloads: Vec<usize>,
}

impl Default for Axes {
    fn default() -> Self {
        Self {
            in_flight: vec![1, 10, 100, 1000, 10_000],
            payloads: vec![64, 1024, 16 * 1024, 64 * 1024],
        }
    }
}

/// Which axis a point is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Axis {
    InFlight,
    Payload,
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub axis: Axis,
    pub journal: bool,
    pub in_flight: usize,
    pub payload_bytes: usize,
    /// Requests measured in this run.
    pub requests: u64,
    pub throughput_rps: f64,
    /// Request payload bytes per second, in MB (10^6 bytes).
    pub payload_mb_per_s: f64,
    pub latency_us: Latency,
    pub cpu_us_per_request: f64,
    pub errors: u64,
    /// Raw ZeroMQ PUSH→PULL at this payload size, in MB/s (payload points
    /// with the journal off only, measured after the run).
    pub raw_mb_per_s: Option<f64>,
}

/// Every point, and what they were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    pub machine: Machine,
    pub workers: usize,
    pub services: usize,
    pub flow: String,
    /// Where the journal was kept when on: `sqlite` or `postgres`.
    pub journal_backend: &'static str,
    pub journal_sync: zmanager::journal::SyncMode,
    /// The most requests of a point (`--requests`); points with little in
    /// flight or large payloads run fewer ([`requests_for`]).
    pub max_requests: u64,
    pub points: Vec<Point>,
}

/// The fewest requests a point is measured with (the first ones warm
/// nothing: the warm-up comes before them).
pub const FEWEST: u64 = 5_000;

/// Requests for a point: enough to last about as long as the others, at
/// most `max` (and at least the services and [`FEWEST`], or `max` if
/// smaller). A run with 1 in flight takes a round trip per request, so it
/// gets a thousandth of what 1,000 get; a larger payload gets fewer in
/// proportion to its bytes past 64.
pub fn requests_for(max: u64, in_flight: usize, payload: usize, services: usize) -> u64 {
    let by_in_flight = (in_flight as u64).saturating_mul(1000);
    let by_bytes = max.saturating_mul(64) / (payload.max(64) as u64);
    by_in_flight
        .min(by_bytes)
        .max(FEWEST)
        .max(services as u64)
        .min(max.max(services as u64))
}

/// Measures every point of `axes`, the journal off then on at each.
pub fn run(
    base: &BenchOptions,
    axes: &Axes,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Sweep, BenchError> {
    base.validate()?;
    let machine = Machine::read();
    if axes.in_flight.is_empty() && axes.payloads.is_empty() {
        return Err(BenchError::Invalid(
            "a report needs at least one in-flight count or payload size".to_owned(),
        ));
    }
    if let Some(w) = axes.in_flight.iter().find(|&&w| w < base.services) {
        return Err(BenchError::Invalid(format!(
            "in flight {w} is fewer than the {} services",
            base.services
        )));
    }
    if axes.payloads.contains(&0) {
        return Err(BenchError::Invalid(
            "a payload size must be at least 1 byte".to_owned(),
        ));
    }
    let points = axes
        .in_flight
        .iter()
        .map(|&w| (Axis::InFlight, w, base.payload))
        .chain(
            axes.payloads
                .iter()
                .map(|&p| (Axis::Payload, base.in_flight, p)),
        );
    let mut measured = Vec::new();
    for (axis, in_flight, payload) in points {
        for journal in [false, true] {
            let requests = requests_for(base.requests, in_flight, payload, base.services);
            let raw = axis == Axis::Payload && !journal && base.raw_messages > 0;
            let options = BenchOptions {
                in_flight,
                payload,
                requests,
                journal: if journal {
                    JournalMode::On
                } else {
                    JournalMode::Off
                },
                rounds: 1,
                raw_runs: usize::from(raw),
                raw_messages: if raw {
                    requests_for(base.raw_messages, usize::MAX, payload, 1)
                } else {
                    0
                },
                ..base.clone()
            };
            let report = super::run(&options, on_progress)?;
            measured.push(point(axis, journal, &report));
        }
    }
    Ok(Sweep {
        machine,
        workers: base.workers,
        services: base.services,
        flow: base.flow.clone(),
        journal_backend: base.journal_backend(),
        journal_sync: base.journal_sync,
        max_requests: base.requests,
        points: measured,
    })
}

fn point(axis: Axis, journal: bool, r: &Report) -> Point {
    let mb = |per_s: f64| per_s * r.config.payload_bytes as f64 / 1e6;
    Point {
        axis,
        journal,
        in_flight: r.config.in_flight,
        payload_bytes: r.config.payload_bytes,
        requests: r.config.requests,
        throughput_rps: r.throughput_rps,
        payload_mb_per_s: mb(r.throughput_rps),
        latency_us: r.latency_us,
        cpu_us_per_request: r.cpu_us_per_request,
        errors: r.errors,
        raw_mb_per_s: r.raw_zeromq.as_ref().map(|raw| mb(raw.rate_per_s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_with_little_in_flight_or_large_payloads_run_fewer_requests() {
        let k = 1_000_000;
        assert_eq!(requests_for(k, 1, 64, 1), FEWEST, "1 in flight");
        assert_eq!(requests_for(k, 100, 64, 1), 100_000);
        assert_eq!(requests_for(k, 1000, 64, 1), k);
        assert_eq!(requests_for(k, 10_000, 64, 1), k, "never more than asked");
        assert_eq!(requests_for(k, 1000, 1024, 1), 62_500);
        assert_eq!(requests_for(k, 1000, 64 * 1024, 1), FEWEST);
        // A small --requests is taken as it is, but never below the
        // services, each of which sends at least one.
        assert_eq!(requests_for(300, 1, 64, 1), 300);
        assert_eq!(requests_for(1, 1, 64, 4), 4);
    }
}
