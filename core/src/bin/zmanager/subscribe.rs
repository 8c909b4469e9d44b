//! `zmanager subscribe`: print what the Integration Manager publishes.

use std::process::ExitCode;

use zmanager::service::Subscription;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Topic prefixes (`Greeting~` for the `@PUBLISH` steps and results
    /// of one flow published on its topics; `@reply~<service id>~` for one
    /// service's results, which is where `zmanager send` and the Rust and
    /// Python clients get theirs); none means every topic.
    topics: Vec<String>,
    /// The Integration Manager's endpoint [default: the configuration's,
    /// or tcp://127.0.0.1:19034].
    #[arg(long, env = "ZMANAGER_PUBLISH")]
    publish: Option<String>,
    #[command(flatten)]
    config: crate::node_args::ConfigArg,
    #[command(flatten)]
    keys: crate::node_args::KeyArgs,
    /// Stop after this many messages.
    #[arg(long, short = 'n')]
    count: Option<u64>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let keys = args.keys.load(&config)?;
    let publish = args
        .publish
        .unwrap_or_else(|| config.endpoints.publish.clone());
    let prefixes = if args.topics.is_empty() {
        vec![String::new()]
    } else {
        args.topics
    };
    crate::runtime(false)?.block_on(async move {
        let mut subscription = Subscription::connect_with(&publish, keys.as_ref(), &prefixes)?;
        let mut seen = 0u64;
        while let Some(published) = subscription.next().await {
            let payload = zmanager_sdk::decode::<serde_json::Value>(&published.payload)
                .map_or_else(
                    |e| format!("<{} bytes: {e}>", published.payload.len()),
                    |v| v.to_string(),
                );
            let e = &published.envelope;
            let status = match &e.error {
                Some(error) => format!(
                    "error {} {}: {}",
                    u16::from(error.code),
                    error.name,
                    error.message
                ),
                None => "ok".to_owned(),
            };
            println!(
                "{} id={} flow={} step={} {status} {payload}",
                published.topic, e.id, e.flow, e.step
            );
            seen += 1;
            if args.count.is_some_and(|n| seen >= n) {
                break;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
