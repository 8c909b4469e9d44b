//! `zmanager dlq`: inspect and replay the dead-letter store.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use zmanager::catalog::Catalog;
use zmanager::client::{Service, ServiceOptions};
use zmanager::dead_letter::{DeadLetter, DeadLetterStore, Replay, database_path};
use zmanager::wire::envelope::now_us;
use zmanager::wire::error_code::ErrorCode;

use crate::node_args::{ConfigArg, DataDirArg, EndpointArgs};
use crate::replay::{Recorded, Replayed, operator_cookie, replay};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    data_dir: DataDirArg,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// One line per dead letter, oldest first.
    List {
        /// Show at most this many (the most recent).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// A dead letter in full: envelope, payload and the reason of every attempt.
    Show { seq: i64 },
    /// Push dead letters into the node again, one at a time, and print
    /// what came of each. A dead letter is marked replayed only when its
    /// replay completed OK; exits with 1 unless every one did.
    Replay {
        /// The dead letters to replay.
        #[arg(required_unless_present = "all")]
        seqs: Vec<i64>,
        /// Replay every dead letter not replayed yet, except those whose
        /// replay was dead-lettered again (the new dead letter is replayed
        /// instead).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        endpoints: EndpointArgs,
        /// The node's flows and mappings, to find where a message resumes
        /// when it was delivered past the first step (default: built-in).
        #[arg(long)]
        flows: Option<PathBuf>,
        #[arg(long)]
        mappings: Option<PathBuf>,
        /// Seconds to wait for each result.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let node = args.config.load()?;
    let data_dir = args.data_dir.resolve(&node);
    let path = database_path(&data_dir);
    if !path.exists() {
        bail!(
            "no dead-letter store at {} (is --data-dir the node's data directory?)",
            path.display()
        );
    }
    let store = DeadLetterStore::open(&data_dir)?;
    match args.command {
        Command::List { limit } => {
            let letters = store.list(limit)?;
            for d in &letters {
                let e = &d.message.envelope;
                let replayed = match (d.replayed_us, store.superseded_by(d.seq)?) {
                    (Some(_), _) => " (replayed)".to_owned(),
                    (None, Some(again)) => format!(" (dead-lettered again as #{again})"),
                    (None, None) => String::new(),
                };
                let last = d.errors.last().map_or("", String::as_str);
                println!(
                    "#{} flow={} id={} service={} attempts={}{replayed}: {last}",
                    d.seq, e.flow, e.id, e.service, e.attempt
                );
            }
            eprintln!("{} shown, {} stored", letters.len(), store.count()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { seq } => {
            let d = store
                .get(seq)?
                .with_context(|| format!("no dead letter #{seq}"))?;
            show(&d, &store.replays(seq)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            seqs,
            all,
            endpoints,
            flows,
            mappings,
            timeout,
        } => {
            let letters = if all {
                let mut letters = Vec::new();
                for d in store.list(usize::MAX)? {
                    if d.replayed_us.is_none() && store.superseded_by(d.seq)?.is_none() {
                        letters.push(d);
                    }
                }
                letters
            } else {
                let mut letters = Vec::new();
                for seq in seqs {
                    letters.push(
                        store
                            .get(seq)?
                            .with_context(|| format!("no dead letter #{seq}"))?,
                    );
                }
                letters
            };
            // The node's catalog, unless the flags name other files.
            let mut config = node.clone();
            if flows.is_some() {
                config.catalog.flows = flows;
            }
            if mappings.is_some() {
                config.catalog.mappings = mappings;
            }
            let (catalog, _) = config.load_catalog();
            let options = ServiceOptions {
                operator: operator_cookie(&data_dir),
                ..endpoints.service("dlq-replay", &node)?
            };
            let limit = Duration::from_secs(timeout);
            crate::runtime(false)?.block_on(async move {
                let service = Service::connect(options).await?;
                let mut tally = Tally::default();
                // One at a time, oldest first: a flow ordered by key gets
                // them in their order.
                for d in &letters {
                    let line = match resume_after(&catalog, d) {
                        Ok(after) => {
                            let e = &d.message.envelope;
                            let request = Recorded {
                                flow: &e.flow,
                                after: &after,
                                order_key: &e.order_key,
                                payload: d.message.payload.clone(),
                            };
                            let replayed = replay(&service, request, limit, || {}).await?;
                            settle(&store, d.seq, &service, &replayed, limit, &mut tally)?
                        }
                        Err(why) => {
                            tally.not_sent += 1;
                            format!("not sent: {why}; not replayed")
                        }
                    };
                    println!("#{} {line}", d.seq);
                }
                eprintln!("{}", tally.summary(letters.len()));
                Ok(if tally.ok == letters.len() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            })
        }
    }
}

/// The key of the step a dead letter resumes after: the step before the
/// one it was delivered at (empty: the flow's entry), from the flows the
/// command was given.
fn resume_after(catalog: &Catalog, d: &DeadLetter) -> Result<String, String> {
    let e = &d.message.envelope;
    let step = usize::try_from(e.step).unwrap_or(usize::MAX);
    match step {
        0 | 1 => Ok(String::new()),
        _ => catalog
            .flow(&e.flow)
            .and_then(|f| f.flow.steps.get(step - 1))
            .map(|s| s.key.to_string())
            .ok_or_else(|| {
                format!(
                    "flow {} has no step {} in these flows (see --flows)",
                    e.flow,
                    step - 1
                )
            }),
    }
}

/// What became of the replays of one command.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    refused: usize,
    failed: usize,
    dead_lettered: usize,
    no_result: usize,
    not_sent: usize,
}

impl Tally {
    fn summary(&self, letters: usize) -> String {
        let s = if letters == 1 { "" } else { "s" };
        format!(
            "{letters} dead letter{s}: {} ok (marked replayed), {} refused, {} failed, \
             {} dead-lettered again, {} without a result, {} not sent",
            self.ok, self.refused, self.failed, self.dead_lettered, self.no_result, self.not_sent
        )
    }
}

/// Records what came of the replay of dead letter `seq` and marks it
/// replayed if it completed OK; returns the line to print.
///
/// A replay the node refused, or that failed or got no result in time,
/// leaves the letter unreplayed (`--all` tries it again). A replay that
/// was dead-lettered again leaves it unreplayed too, but superseded: the
/// new dead letter holds the message now, and `--all` replays that one
/// instead of both.
fn settle(
    store: &DeadLetterStore,
    seq: i64,
    service: &Service,
    replayed: &Replayed,
    limit: Duration,
    tally: &mut Tally,
) -> anyhow::Result<String> {
    let outcome = replayed.describe(limit);
    let mut again = None;
    let line = match replayed {
        Replayed::Ok { .. } => {
            tally.ok += 1;
            store.mark_replayed(seq, now_us())?;
            outcome.clone()
        }
        Replayed::Refused { .. } => {
            tally.refused += 1;
            format!("{outcome} (not taken by the node); not replayed")
        }
        Replayed::Failed { id, error, .. } if error.code == ErrorCode::DeadLettered => {
            match store.find(service.id(), id)? {
                Some(new) => {
                    tally.dead_lettered += 1;
                    again = Some(new.seq);
                    format!(
                        "dead-lettered again as #{}: {outcome}; not replayed, #{} holds it now",
                        new.seq, new.seq
                    )
                }
                None => {
                    tally.failed += 1;
                    format!(
                        "{outcome} (its dead letter is not in this store: is --data-dir \
                         the node's?); not replayed"
                    )
                }
            }
        }
        Replayed::Failed { .. } => {
            tally.failed += 1;
            format!("{outcome}; not replayed")
        }
        Replayed::NotAccepted => {
            tally.no_result += 1;
            format!("{outcome}; not replayed")
        }
        Replayed::NoResult { .. } => {
            tally.no_result += 1;
            format!("{outcome}; not replayed (it may still run: check before replaying again)")
        }
    };
    let record = Replay {
        at_us: now_us(),
        outcome: match replayed.id() {
            Some(id) => format!("{outcome} (as {id})"),
            None => outcome,
        },
        dead_letter: again,
    };
    store.record_replay(seq, &record)?;
    Ok(line)
}

fn show(d: &DeadLetter, replays: &[Replay]) {
    let e = &d.message.envelope;
    println!("dead letter #{}", d.seq);
    println!("  at:         {}", crate::times::time(d.at_us));
    println!("  flow:       {}", e.flow);
    println!("  step:       {} `{}`", e.step, e.key);
    if !e.order_key.is_empty() {
        println!("  order_key:  {}", e.order_key);
    }
    println!("  id:         {}", e.id);
    println!("  service:    {}", e.service);
    println!("  reply_to:   {}", e.reply_to);
    println!("  attempts:   {}", e.attempt);
    println!("  accepted:   {}", crate::times::time(e.accepted_us));
    match d.replayed_us {
        Some(t) => println!("  replayed:   {}", crate::times::time(t)),
        None => println!("  replayed:   no"),
    }
    let payload = zmanager_sdk::decode::<serde_json::Value>(&d.message.payload).map_or_else(
        |e| format!("<{} bytes: {e}>", d.message.payload.len()),
        |v| v.to_string(),
    );
    println!("  payload:    {payload}");
    println!("  errors:");
    for error in &d.errors {
        println!("    - {error}");
    }
    if !replays.is_empty() {
        println!("  replays:");
        for r in replays {
            println!("    - {}: {}", crate::times::time(r.at_us), r.outcome);
        }
    }
}
