//! `zmanager dlq`: inspect and replay the dead-letter store.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use zmanager::dead_letter::replay::{self, Settled};
use zmanager::dead_letter::{
    DeadLetter, DeadLetterLog as _, DeadLetterStore, Replay, database_path,
};
use zmanager::journal::Location;
use zmanager_client::{Service, ServiceOptions};

use crate::node_args::{ConfigArg, DataDirArg, EndpointArgs};
use crate::replay::{Recorded, operator_cookie};

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
    // Beside the node's journal: in the data directory, or in the
    // journal's PostgreSQL database.
    let at = node.journal.dead_letters(&data_dir);
    if let Location::Sqlite(_) = at {
        let path = database_path(&data_dir);
        if !path.exists() {
            bail!(
                "no dead-letter store at {} (is --data-dir the node's data directory?)",
                path.display()
            );
        }
    }
    let store = DeadLetterStore::open(&at)?;
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
            // The store is used between pushes, off the runtime: the
            // PostgreSQL client runs one of its own.
            let runtime = crate::runtime(false)?;
            let service = runtime.block_on(Service::connect(options))?;
            let mut tally = Tally::default();
            // One at a time, oldest first: a flow ordered by key gets them
            // in their order.
            for d in &letters {
                let line = match replay::request(&catalog, d) {
                    Ok(request) => {
                        let recorded = Recorded {
                            flow: &request.flow,
                            after: &request.after,
                            order_key: &request.order_key,
                            payload: request.payload.clone(),
                        };
                        let replayed = runtime.block_on(crate::replay::replay(
                            &service,
                            recorded,
                            limit,
                            || {},
                        ))?;
                        let settled =
                            replay::settle(&store, d.seq, service.id(), &replayed, limit)?;
                        tally.count(settled.settled);
                        settled.line
                    }
                    Err(why) => {
                        tally.not_sent += 1;
                        format!("not sent: {why} (see --flows); not replayed")
                    }
                };
                println!("#{} {line}", d.seq);
            }
            eprintln!("{}", tally.summary(letters.len()));
            // The service's sockets close on the runtime.
            runtime.block_on(async move { drop(service) });
            Ok(if tally.ok == letters.len() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
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
    fn count(&mut self, settled: Settled) {
        match settled {
            Settled::Ok => self.ok += 1,
            Settled::Refused => self.refused += 1,
            Settled::Failed => self.failed += 1,
            Settled::DeadLetteredAgain(_) => self.dead_lettered += 1,
            Settled::NotAccepted | Settled::NoResult => self.no_result += 1,
        }
    }

    fn summary(&self, letters: usize) -> String {
        let s = if letters == 1 { "" } else { "s" };
        format!(
            "{letters} dead letter{s}: {} ok (marked replayed), {} refused, {} failed, \
             {} dead-lettered again, {} without a result, {} not sent",
            self.ok, self.refused, self.failed, self.dead_lettered, self.no_result, self.not_sent
        )
    }
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
