//! `/metrics`: the Subject's figures ([`Stats`]) in the OpenMetrics text
//! format Prometheus scrapes. The names and what each means are listed in
//! `docs/observability.md` (a test checks that every name there is here).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::buckets::Buckets;
use crate::subject::{Stats, WorkerStats};

pub(super) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the node shows besides the Subject's figures.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Node {
    /// Bytes the Integration Manager sent.
    pub(super) bytes_out: u64,
    /// Bytes of the journal's data (`None`: off).
    pub(super) journal_bytes: Option<u64>,
}

/// `stats` and `node` as OpenMetrics text, every name prefixed
/// `zmanager_`.
pub(super) fn render(stats: &Stats, node: &Node) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("zmanager");
    registry.register_collector(Box::new(Figures(stats.clone(), *node)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

#[derive(Debug)]
struct Figures(Stats, Node);

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: usize,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// A gauge with one sample per worker, labelled with its `pid`.
fn per_worker(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    workers: &[WorkerStats],
    value: impl Fn(&WorkerStats) -> i64,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for worker in workers {
        let pid = worker.pid.to_string();
        let labels = [("pid", pid.as_str())];
        ConstGauge::new(value(worker)).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Figures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let c = &s.counters;
        let e = &mut encoder;
        counter(
            e,
            "received_bytes",
            "Bytes services pushed to the intake (every frame, as received).",
            c.bytes_in,
        )?;
        counter(
            e,
            "published_bytes",
            "Bytes the Integration Manager sent (every frame of every message published).",
            self.1.bytes_out,
        )?;
        if let Some(bytes) = self.1.journal_bytes {
            gauge(
                e,
                "journal_bytes",
                "Bytes of the journal's data (what retention keeps under max_mb).",
                usize::try_from(bytes).unwrap_or(usize::MAX),
            )?;
        }
        counter(
            e,
            "requests_accepted",
            "Requests accepted (each once, however often sent).",
            c.accepted,
        )?;
        counter(
            e,
            "requests_refused",
            "Messages refused with an error result of the node's own (bad request, overloaded, forbidden...), and requests it ended so.",
            c.rejected,
        )?;
        counter(
            e,
            "messages_malformed",
            "Messages that could not be read at all (not even to answer them).",
            c.malformed,
        )?;
        counter(e, "results", "Results of flows published.", c.results)?;
        counter(
            e,
            "published",
            "Messages published at @PUBLISH steps.",
            c.published,
        )?;
        counter(
            e,
            "redeliveries",
            "Messages given to another worker after theirs was lost.",
            c.redelivered,
        )?;
        counter(
            e,
            "retries",
            "Failed attempts put to wait for their retry policy's delay.",
            c.retried,
        )?;
        counter(
            e,
            "dead_letters",
            "Messages dead-lettered.",
            c.dead_lettered,
        )?;
        counter(
            e,
            "duplicates",
            "Requests sent again and absorbed (not run twice).",
            c.duplicates,
        )?;
        counter(
            e,
            "workers_lost",
            "Workers declared lost (silent, exited, or past message_timeout).",
            c.workers_lost,
        )?;
        counter(
            e,
            "worker_restarts",
            "Worker processes started again after one ended (it crashed, exited or was killed).",
            s.worker_restarts,
        )?;
        counter(
            e,
            "late_results",
            "Results from workers already declared lost (ignored).",
            c.late_results,
        )?;
        counter(
            e,
            "async_suspended",
            "Flows that waited at a step (@ASYNC or a service's).",
            c.suspended,
        )?;
        counter(e, "async_resumed", "Flows resumed by an answer.", c.resumed)?;
        counter(
            e,
            "async_timeouts",
            "Flows ended at an @ASYNC step by async_timeout.",
            c.async_timeouts,
        )?;

        gauge(e, "pending", "Requests waiting for a worker.", s.pending)?;
        gauge(e, "in_flight", "Messages on workers.", s.in_flight)?;
        gauge(
            e,
            "waiting_at_async",
            "Flows waiting at @ASYNC steps (max_suspended bounds them).",
            s.at_async,
        )?;
        gauge(
            e,
            "waiting_at_services",
            "Flows waiting at steps given to services.",
            s.at_services,
        )?;
        gauge(
            e,
            "retry_delayed",
            "Failed attempts waiting out their retry delay.",
            s.delayed,
        )?;
        gauge(
            e,
            "waiting_bytes",
            "Bytes of what waits: pending, delayed and suspended (max_pending_mb bounds them).",
            s.waiting_bytes,
        )?;
        gauge(
            e,
            "workers_connected",
            "Workers connected to the Subject.",
            s.workers.len(),
        )?;
        gauge(
            e,
            "durable_subscriptions",
            "Durable subscriptions kept.",
            s.durables,
        )?;
        gauge(
            e,
            "journal_failing",
            "1 while the journal cannot commit (new requests are refused), else 0.",
            usize::from(s.journal_failing.is_some()),
        )?;

        per_worker(
            e,
            "worker_in_flight",
            "Messages on each worker, by its process id.",
            &s.workers,
            |w| i64::try_from(w.in_flight).unwrap_or(i64::MAX),
        )?;
        per_worker(
            e,
            "worker_credits",
            "Credits each worker announced (messages it takes at once), by its process id.",
            &s.workers,
            |w| i64::from(w.credits),
        )?;
        {
            let mut family = e.encode_descriptor(
                "requests_ended",
                "Requests that ended, by flow and outcome (ok, or the error's name).",
                None,
                MetricType::Counter,
            )?;
            for (flow, stats) in &s.flows {
                for (outcome, n) in &stats.ended {
                    let labels = [("flow", flow.as_str()), ("outcome", outcome)];
                    ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = e.encode_descriptor(
            "request_duration_seconds",
            "From acceptance to the end (result, error or dead letter), by flow.",
            None,
            MetricType::Histogram,
        )?;
        for (flow, stats) in &s.flows {
            let labels = [("flow", flow.as_str())];
            histogram(family.encode_family(&labels)?, &stats.latency, 1e-6)?;
        }
        if let Some(journal) = &s.journal {
            histogram(
                e.encode_descriptor(
                    "journal_commit_seconds",
                    "How long each journal commit took, tries again included.",
                    None,
                    MetricType::Histogram,
                )?,
                &journal.seconds_us,
                1e-6,
            )?;
            histogram(
                e.encode_descriptor(
                    "journal_batch_events",
                    "Events in each journal commit (one per request accepted, dispatched, ended...).",
                    None,
                    MetricType::Histogram,
                )?,
                &journal.events,
                1.0,
            )?;
        }
        Ok(())
    }
}

/// `buckets` as a histogram, each bound and the sum times `scale` (µs to
/// seconds: `1e-6`).
fn histogram(
    mut encoder: MetricEncoder<'_>,
    buckets: &Buckets,
    scale: f64,
) -> Result<(), std::fmt::Error> {
    // Per bucket: the encoder adds them up; `f64::MAX` is its +Inf.
    let counts: Vec<(f64, u64)> = buckets
        .bounds
        .iter()
        .map(|&bound| bound as f64 * scale)
        .chain([f64::MAX])
        .zip(buckets.counts.iter().copied())
        .collect();
    encoder.encode_histogram::<NoLabelSet>(buckets.sum as f64 * scale, buckets.count, &counts, None)
}
