//! What the Subject shows of itself (`/metrics`, `/readyz`): its counters,
//! what it holds now, and per flow how requests ended and how long they
//! took, read on demand from the loop ([`SubjectCore::stats`]) so nothing
//! on the hot path does more than add to a number.

use std::collections::{BTreeMap, HashMap};

use super::core::{Counters, SubjectCore};
use crate::buckets::Buckets;
use crate::journal::CommitFigures;

/// Upper bounds of the end-to-end latency buckets, in microseconds: from
/// 100 µs to a minute, about ×2.5 apart (what a dashboard needs to tell a
/// fast flow from a slow one; percentiles come from these).
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000, 60_000_000,
];

/// How the requests of one flow ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowStats {
    /// From acceptance to the end (result, error or dead letter), in µs
    /// ([`LATENCY_BOUNDS_US`]).
    pub latency: Buckets,
    /// Ends by outcome: `ok`, or the error's name (`action_failed`,
    /// `dead_lettered`, …).
    pub ended: BTreeMap<&'static str, u64>,
    /// Per step of the flow, by its position.
    pub steps: Vec<StepStats>,
}

/// How often one step of a flow was entered, and how many requests ended
/// with an error there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepStats {
    /// Times a request entered the step (a redelivery does not enter it
    /// again: it is the same entry's next attempt).
    pub entered: u64,
    /// Requests that ended with an error at this step (an action's error,
    /// a timeout, a dead letter).
    pub failed: u64,
}

impl Default for FlowStats {
    fn default() -> Self {
        Self {
            latency: Buckets::new(&LATENCY_BOUNDS_US),
            ended: BTreeMap::new(),
            steps: Vec::new(),
        }
    }
}

impl FlowStats {
    fn step(&mut self, step: usize) -> &mut StepStats {
        if self.steps.len() <= step {
            self.steps.resize(step + 1, StepStats::default());
        }
        &mut self.steps[step]
    }
}

/// A worker as the Subject sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStats {
    pub pid: u32,
    pub in_flight: usize,
    /// The messages it may hold at once (its window).
    pub credits: u32,
    /// When it said READY, µs since the Unix epoch.
    pub ready_us: u64,
}

/// Everything at one moment.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub counters: Counters,
    /// Requests waiting for a worker.
    pub pending: usize,
    pub in_flight: usize,
    /// Flows at `@ASYNC` steps, and at steps given to services.
    pub at_async: usize,
    pub at_services: usize,
    /// Failed attempts waiting out their retry delay.
    pub delayed: usize,
    /// Bytes of what waits (`max_pending_mb` bounds them).
    pub waiting_bytes: usize,
    pub workers: Vec<WorkerStats>,
    pub durables: usize,
    /// Why the journal cannot commit, while it cannot.
    pub journal_failing: Option<String>,
    pub flows: BTreeMap<String, FlowStats>,
    /// The journal's commits (none with the journal off).
    pub journal: Option<CommitFigures>,
    /// Worker processes started again after one ended: the supervisor's
    /// count, which the Subject does not know (the HTTP server fills it in).
    pub worker_restarts: u64,
}

/// Per flow, what [`Stats::flows`] reads: kept by the Subject.
pub(super) type FlowTable = HashMap<String, FlowStats>;

impl SubjectCore {
    /// The figures of `flow`. Only accepted requests are counted, so only
    /// the catalog's flows: the table stays as small as the catalog.
    fn flow_stats_of(&mut self, flow: &str) -> &mut FlowStats {
        if !self.flow_stats.contains_key(flow) {
            self.flow_stats
                .insert(flow.to_owned(), FlowStats::default());
        }
        self.flow_stats.get_mut(flow).expect("inserted above")
    }

    /// A request of `flow` entered its step `step`.
    pub(super) fn record_step(&mut self, flow: &str, step: usize) {
        self.flow_stats_of(flow).step(step).entered += 1;
    }

    /// A request of `flow` entered each of `steps` (on a worker, which
    /// runs consecutive actions without coming back).
    pub(super) fn record_steps(&mut self, flow: &str, steps: std::ops::RangeInclusive<usize>) {
        if steps.is_empty() {
            return;
        }
        let stats = self.flow_stats_of(flow);
        for step in steps {
            stats.step(step).entered += 1;
        }
    }

    /// A request of `flow`, accepted at `accepted_us`, ended at its step
    /// `step` with `outcome` (`ok` or an error's name).
    pub(super) fn record_end(
        &mut self,
        flow: &str,
        step: u32,
        accepted_us: u64,
        outcome: &'static str,
    ) {
        let wall_us = self.now.wall_us;
        let stats = self.flow_stats_of(flow);
        if outcome != "ok" {
            stats.step(step as usize).failed += 1;
        }
        if accepted_us > 0 {
            stats.latency.record(wall_us.saturating_sub(accepted_us));
        }
        *stats.ended.entry(outcome).or_default() += 1;
    }

    /// Everything at this moment.
    pub fn stats(&self) -> Stats {
        let at_services = self.suspended.len() - self.at_async;
        Stats {
            counters: self.counters,
            pending: self.table.pending_len(),
            in_flight: self.table.in_flight_len(),
            at_async: self.at_async,
            at_services,
            delayed: self.delayed.len(),
            waiting_bytes: self.waiting_bytes(),
            workers: self
                .table
                .workers()
                .map(|w| WorkerStats {
                    pid: self.table.pid(w).unwrap_or(0),
                    in_flight: self.table.in_flight_on(w),
                    credits: self.table.credits(w).unwrap_or(0),
                    ready_us: self.table.ready_at(w).map_or(0, |at| {
                        let ago = self.now.at.saturating_duration_since(at);
                        self.now
                            .wall_us
                            .saturating_sub(u64::try_from(ago.as_micros()).unwrap_or(u64::MAX))
                    }),
                })
                .collect(),
            durables: self.durables.len(),
            journal_failing: self.commits.failing().map(str::to_owned),
            flows: self
                .flow_stats
                .iter()
                .map(|(flow, stats)| (flow.clone(), stats.clone()))
                .collect(),
            journal: None,
            worker_restarts: 0,
        }
    }
}
