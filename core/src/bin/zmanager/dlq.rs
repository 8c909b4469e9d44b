//! `zmanager dlq`: inspect and replay the dead-letter store.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use zmanager::config::NodeConfig;
use zmanager::dead_letter::{DeadLetter, DeadLetterStore, database_path};
use zmanager::envelope::now_us;
use zmanager::service::{Service, ServiceError, describe_failure};

use crate::node_args::NodeArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
    /// The node's data directory.
    #[arg(long, global = true, default_value = "zmanager-data")]
    data_dir: PathBuf,
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
    /// Push dead letters into the node again and print their results.
    Replay {
        /// The dead letters to replay.
        #[arg(required_unless_present = "all")]
        seqs: Vec<i64>,
        /// Replay every dead letter not replayed yet.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        node: NodeArgs,
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
    let path = database_path(&args.data_dir);
    if !path.exists() {
        bail!(
            "no dead-letter store at {} (is --data-dir the node's data directory?)",
            path.display()
        );
    }
    let store = DeadLetterStore::open(&args.data_dir)?;
    match args.command {
        Command::List { limit } => {
            let letters = store.list(limit)?;
            for d in &letters {
                let e = &d.message.envelope;
                let replayed = if d.replayed_us.is_some() {
                    " (replayed)"
                } else {
                    ""
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
            show(&d);
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            seqs,
            all,
            node,
            flows,
            mappings,
            timeout,
        } => {
            let letters = if all {
                store
                    .list(usize::MAX)?
                    .into_iter()
                    .filter(|d| d.replayed_us.is_none())
                    .collect()
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
            let config = NodeConfig {
                catalog: zmanager::config::CatalogPaths { flows, mappings },
                ..NodeConfig::default()
            };
            let (catalog, _) = config.load_catalog();
            let options = node.service("dlq-replay");
            crate::runtime(false)?.block_on(async move {
                let service = Service::connect(options).await?;
                let mut failed = 0;
                for d in &letters {
                    let e = &d.message.envelope;
                    // Resume at the step it was delivered at: after the step before it.
                    let step = usize::try_from(e.step).unwrap_or(usize::MAX);
                    let after = match step {
                        0 | 1 => String::new(),
                        _ => catalog
                            .flow(&e.flow)
                            .and_then(|f| f.flow.steps.get(step - 1))
                            .map(|s| s.key.to_string())
                            .with_context(|| {
                                format!("#{}: flow {} has no step {}", d.seq, e.flow, step - 1)
                            })?,
                    };
                    let limit = Duration::from_secs(timeout);
                    let outcome = tokio::time::timeout(
                        limit,
                        service.request_bytes_after(&e.flow, &after, d.message.payload.clone()),
                    )
                    .await;
                    match outcome {
                        Ok(Ok(reply)) => {
                            let value = zmanager_sdk::decode::<serde_json::Value>(&reply.payload)
                                .map_or_else(|e| format!("<{e}>"), |v| v.to_string());
                            println!("#{} ok {value}", d.seq);
                            store.mark_replayed(d.seq, now_us())?;
                        }
                        Ok(Err(ServiceError::Failed { key, error })) => {
                            failed += 1;
                            println!("#{} error {}", d.seq, describe_failure(&key, &error));
                            store.mark_replayed(d.seq, now_us())?;
                        }
                        Ok(Err(e)) => return Err(e.into()),
                        Err(_) => {
                            failed += 1;
                            println!("#{} no result within {timeout}s", d.seq);
                        }
                    }
                }
                eprintln!("{} replayed, {failed} failed", letters.len());
                Ok(if failed == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            })
        }
    }
}

fn show(d: &DeadLetter) {
    let e = &d.message.envelope;
    println!("dead letter #{}", d.seq);
    println!("  at_us:      {}", d.at_us);
    println!("  flow:       {}", e.flow);
    println!("  step:       {} `{}`", e.step, e.key);
    println!("  id:         {}", e.id);
    println!("  service:    {}", e.service);
    println!("  reply_to:   {}", e.reply_to);
    println!("  attempts:   {}", e.attempt);
    println!("  accepted:   {}", e.accepted_us);
    match d.replayed_us {
        Some(t) => println!("  replayed:   {t}"),
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
}
