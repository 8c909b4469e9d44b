//! `zmanager send`: push one request into a flow and print its result.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use zmanager_client::{Service, ServiceError, describe_failure};

use crate::node_args::NodeArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The flow to start.
    flow: String,
    /// The request payload, as JSON (sent as MessagePack).
    #[arg(long, short, default_value = "null")]
    payload: String,
    #[command(flatten)]
    node: NodeArgs,
    /// Seconds to wait for the result.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// The service id to push as (default: the id the configuration binds
    /// `--key-file` to, else `cli-` and a random suffix):
    /// the id a policy names, such as `ada` for the SecureGreeting flow.
    #[arg(long, value_name = "ID")]
    service: Option<String>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let payload: serde_json::Value = serde_json::from_str(&args.payload)
        .with_context(|| format!("--payload is not JSON: {}", args.payload))?;
    crate::runtime(false)?.block_on(async move {
        // `--timeout` bounds everything: connecting, the handshake and the
        // result.
        let limit = Duration::from_secs(args.timeout);
        let started = tokio::time::Instant::now();
        let mut options = args.node.service("cli")?;
        if args.service.is_some() {
            options.id = args.service;
        }
        options.handshake_timeout = options.handshake_timeout.min(limit);
        let (intake, publish) = (options.intake.clone(), options.publish.clone());
        let service = tokio::time::timeout(limit, Service::connect(options))
            .await
            .map_err(|_| {
                anyhow::anyhow!("{intake} and {publish}: {}", ServiceError::Handshake(limit))
            })??;
        let left = limit.saturating_sub(started.elapsed());
        let outcome = tokio::time::timeout(left, service.request(&args.flow, &payload))
            .await
            .map_err(|_| anyhow::anyhow!("no result within {}s", args.timeout))?;
        match outcome {
            Ok(reply) => {
                let value: serde_json::Value = reply.decode()?;
                println!("{value}");
                Ok(ExitCode::SUCCESS)
            }
            Err(ServiceError::Failed { key, error }) => {
                eprintln!("error {}", describe_failure(&key, &error));
                Ok(ExitCode::FAILURE)
            }
            Err(e) => Err(e.into()),
        }
    })
}
