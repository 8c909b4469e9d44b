//! `zmanager journal`: inspect the durable journal and replay a time range.
//!
//! It reads the journal through a read-only connection, so it can run
//! beside a live node, and closing it never touches the write-ahead log a
//! crashed node left for its next start to look at.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use tokio::sync::oneshot;
use zmanager::journal::{
    Backend, Event, Journal, Location, MessageState, StateFilter, SummaryFilter,
};
use zmanager_client::{Service, ServiceOptions};

use crate::node_args::{ConfigArg, DataDirArg, EndpointArgs};
use crate::replay::{Recorded, Replayed, json, operator_cookie, replay};
use crate::times::{parse_time, time};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    data_dir: DataDirArg,
}

/// Times: RFC 3339 in UTC (`2026-11-25T10:00:00Z`), microseconds since the
/// Unix epoch, or a duration meaning that long ago (`15m`, `2h 30m`).
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Events per kind, unfinished messages, the oldest and newest event,
    /// and the data's size.
    Stats,
    /// One line per message (the latest accepted, listed in acceptance
    /// order): accepted time, state, attempts, flow, service, id.
    List {
        /// Accepted at or after this time.
        #[arg(long, value_name = "T", value_parser = parse_time)]
        since: Option<u64>,
        /// Accepted before this time.
        #[arg(long, value_name = "T", value_parser = parse_time)]
        until: Option<u64>,
        /// Of this flow only.
        #[arg(long, value_name = "F")]
        flow: Option<String>,
        /// In this state only.
        #[arg(long, value_enum)]
        state: Option<State>,
        /// Show at most this many (the latest accepted).
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// A message's whole history: every event, with its attempts and
    /// workers, steps, reasons and payloads.
    Show {
        /// The message id.
        id: String,
        /// The service that sent it (needed when several services used
        /// this id).
        #[arg(long)]
        service: Option<String>,
    },
    /// Push every request accepted in [--since, --until) again into the
    /// running node, as accepted (flow, entry step, ordering key,
    /// payload), as new requests; print what came of each (ok, refused by
    /// the node, failed, no result). Exits with 1 unless all were ok.
    Replay {
        /// Accepted at or after this time.
        #[arg(long, value_name = "T", value_parser = parse_time)]
        since: u64,
        /// Accepted before this time.
        #[arg(long, value_name = "T", value_parser = parse_time)]
        until: u64,
        /// Of this flow only.
        #[arg(long, value_name = "F")]
        flow: Option<String>,
        /// List what would be replayed; send nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        endpoints: EndpointArgs,
        /// Seconds to wait for each result.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 16)]
        parallel: usize,
    },
}

/// `--state`: a message's state, or all unfinished ones.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum State {
    Accepted,
    Suspended,
    Resumed,
    Completed,
    #[value(name = "dead_lettered")]
    DeadLettered,
    /// Accepted, suspended or resumed.
    Unfinished,
}

impl From<State> for StateFilter {
    fn from(state: State) -> Self {
        match state {
            State::Accepted => Self::Is(MessageState::Accepted),
            State::Suspended => Self::Is(MessageState::Suspended),
            State::Resumed => Self::Is(MessageState::Resumed),
            State::Completed => Self::Is(MessageState::Completed),
            State::DeadLettered => Self::Is(MessageState::DeadLettered),
            State::Unfinished => Self::Unfinished,
        }
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let node = args.config.load()?;
    let data_dir = args.data_dir.resolve(&node);
    let at = node.journal.location(&data_dir);
    let journal = Backend::open_to_read(&at).with_context(|| match &at {
        Location::Sqlite(dir) => format!(
            "cannot read the journal in {} (is --data-dir the node's data directory?)",
            dir.display()
        ),
        Location::Postgres(_) => {
            "cannot read the node's PostgreSQL journal ([journal] url of --config)".to_owned()
        }
    })?;
    match args.command {
        Command::Stats => stats(&journal),
        Command::List {
            since,
            until,
            flow,
            state,
            limit,
        } => {
            let filter = SummaryFilter {
                since_us: since,
                until_us: until,
                flow,
                state: state.map(StateFilter::from).unwrap_or_default(),
                limit: Some(limit),
                ..SummaryFilter::default()
            };
            let messages = journal.summaries(&filter)?;
            for m in &messages {
                println!(
                    "{} {:<13} attempts={} flow={} service={} id={}",
                    time(m.accepted_us),
                    m.state.as_str(),
                    m.attempts,
                    m.flow,
                    m.service,
                    m.id
                );
            }
            eprintln!("{} shown", messages.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { id, service } => show(&journal, &id, service),
        Command::Replay {
            since,
            until,
            flow,
            dry_run,
            endpoints,
            timeout,
            parallel,
        } => {
            if since >= until {
                bail!(
                    "--since ({}) must be before --until ({})",
                    time(since),
                    time(until)
                );
            }
            let messages = journal.range(since, until, flow.as_deref())?;
            drop(journal);
            if dry_run {
                for m in &messages {
                    let e = &m.envelope;
                    let keyed = if e.order_key.is_empty() {
                        String::new()
                    } else {
                        format!(" (order_key {:?})", e.order_key)
                    };
                    println!(
                        "{}/{} would be replayed into {}{keyed} {}",
                        e.service,
                        e.id,
                        e.flow,
                        json(&m.payload)
                    );
                }
                eprintln!(
                    "{} would be replayed (accepted {} to {}); dry run, nothing sent",
                    messages.len(),
                    time(since),
                    time(until)
                );
                return Ok(ExitCode::SUCCESS);
            }
            let options = ServiceOptions {
                operator: operator_cookie(&data_dir),
                ..endpoints.service("journal-replay", &node)?
            };
            let limit = Duration::from_secs(timeout);
            crate::runtime(false)?.block_on(async move {
                let service = Service::connect(options).await?;
                let service = &service;
                // The order of one ordering key is the order the node
                // accepts its requests in: each request of a key waits for
                // the acceptance (or refusal) of the one before it; other
                // keys, and unordered requests, go on in parallel.
                let mut previous: HashMap<(&str, &str), oneshot::Receiver<()>> = HashMap::new();
                let mut outcomes = futures::stream::iter(&messages)
                    .map(|m| {
                        let e = &m.envelope;
                        let (accepted, next) = oneshot::channel();
                        let before = if e.order_key.is_empty() {
                            None
                        } else {
                            previous.insert((e.flow.as_str(), e.order_key.as_str()), next)
                        };
                        async move {
                            if let Some(before) = before {
                                // Sent or dropped: either way it is the turn of this one.
                                let _ = before.await;
                            }
                            let request = Recorded {
                                flow: &e.flow,
                                // As accepted: the key it was pushed with
                                // (empty for the flow's entry step).
                                after: &e.key,
                                order_key: &e.order_key,
                                payload: m.payload.clone(),
                            };
                            let replayed = replay(service, request, limit, || {
                                let _ = accepted.send(());
                            })
                            .await;
                            (m, replayed)
                        }
                    })
                    .buffered(parallel.max(1));
                let mut tally = Tally::default();
                while let Some((m, replayed)) = outcomes.next().await {
                    let e = &m.envelope;
                    let replayed = replayed?;
                    let outcome = replayed.describe(limit);
                    match &replayed {
                        Replayed::Ok { .. } => tally.ok += 1,
                        Replayed::Refused { .. } => tally.refused += 1,
                        Replayed::Failed { .. } => tally.failed += 1,
                        Replayed::NotAccepted | Replayed::NoResult { .. } => tally.no_result += 1,
                    }
                    match replayed.id() {
                        Some(id) => println!("{}/{} replayed as {id}: {outcome}", e.service, e.id),
                        None => println!("{}/{} {outcome}", e.service, e.id),
                    }
                }
                eprintln!(
                    "{} to replay: {} ok, {} refused, {} failed, {} without a result",
                    messages.len(),
                    tally.ok,
                    tally.refused,
                    tally.failed,
                    tally.no_result
                );
                Ok(if tally.ok == messages.len() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            })
        }
    }
}

/// What became of a journal replay's requests.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    refused: usize,
    failed: usize,
    no_result: usize,
}

fn stats(journal: &Backend) -> anyhow::Result<ExitCode> {
    let s = journal.stats()?;
    let unfinished = journal
        .summaries(&SummaryFilter {
            state: StateFilter::Unfinished,
            ..SummaryFilter::default()
        })?
        .len();
    let bytes = journal.data_bytes()?;
    println!("journal {}", journal.name());
    println!("events:");
    for (kind, n) in [
        ("accepted", s.accepted),
        ("dispatched", s.dispatched),
        ("suspended", s.suspended),
        ("resumed", s.resumed),
        ("completed", s.completed),
        ("dead_lettered", s.dead_lettered),
    ] {
        println!("  {kind:<14}{n}");
    }
    println!("unfinished messages: {unfinished}");
    let when =
        |t: Option<u64>| t.map_or_else(|| "-".to_owned(), |t| format!("{} ({t} µs)", time(t)));
    println!("oldest event: {}", when(s.oldest_us));
    println!("newest event: {}", when(s.newest_us));
    #[allow(clippy::cast_precision_loss)] // a size shown to one decimal
    let mib = bytes as f64 / (1024.0 * 1024.0);
    println!("data: {mib:.1} MiB ({bytes} bytes in use in zmanager.db, dead letters included)");
    Ok(ExitCode::SUCCESS)
}

fn show(journal: &Backend, id: &str, service: Option<String>) -> anyhow::Result<ExitCode> {
    let service = match service {
        Some(service) => service,
        None => {
            let found = journal.summaries(&SummaryFilter {
                id: Some(id.to_owned()),
                ..SummaryFilter::default()
            })?;
            let mut services: Vec<String> = found.into_iter().map(|m| m.service).collect();
            services.sort();
            services.dedup();
            match services.len() {
                0 => bail!("no message {id:?} in the journal"),
                1 => services.remove(0),
                _ => bail!(
                    "several services sent a message {id:?}: {}; choose one with --service",
                    services.join(", ")
                ),
            }
        }
    };
    let history = journal.history(&service, id)?;
    if history.is_empty() {
        bail!("no message {id:?} of service {service:?} in the journal");
    }
    println!("message {id} of service {service}");
    for recorded in &history {
        let (at, what) = match &recorded.event {
            Event::Accepted { at_us, message } => {
                let e = &message.envelope;
                let entry = if e.key.is_empty() {
                    "its entry step".to_owned()
                } else {
                    format!("after `{}`", e.key)
                };
                // The catalog version it runs on (docs/reload.md); none
                // on requests journaled before versions existed.
                let version = match e.catalog {
                    0 => String::new(),
                    v => format!(" on catalog version {v}"),
                };
                (
                    at_us,
                    format!(
                        "accepted      into {}{version} at {entry}, payload {}",
                        e.flow,
                        json(&message.payload)
                    ),
                )
            }
            Event::Dispatched {
                at_us,
                attempt,
                worker,
                ..
            } => (
                at_us,
                format!(
                    "dispatched    attempt {attempt} to worker {}",
                    String::from_utf8_lossy(worker)
                ),
            ),
            Event::Suspended {
                at_us,
                step,
                message,
                ..
            } => (
                at_us,
                format!(
                    "suspended     at step {step} `{}`, state {}",
                    message.envelope.key,
                    json(&message.payload)
                ),
            ),
            Event::Resumed {
                at_us,
                step,
                message,
                ..
            } => (
                at_us,
                format!(
                    "resumed       after step {step}, answer {}",
                    json(&message.payload)
                ),
            ),
            Event::Completed { at_us, .. } => (at_us, "completed".to_owned()),
            Event::DeadLettered { at_us, reason, .. } => (at_us, format!("dead_lettered {reason}")),
        };
        println!("  #{:<8} {} {what}", recorded.seq, time(*at));
    }
    Ok(ExitCode::SUCCESS)
}
