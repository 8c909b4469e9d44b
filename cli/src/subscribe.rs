//! `zmanager subscribe`: print what the Integration Manager publishes.

use std::process::ExitCode;

use zmanager_client::{Service, Subscription};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Topic prefixes (`Greeting~` for the `@PUBLISH` steps and results
    /// of one flow published on its topics; `@reply~<service id>~` for one
    /// service's results, which is where `zmanager send` and the Rust and
    /// Python clients get theirs); none means every topic.
    topics: Vec<String>,
    #[command(flatten)]
    node: crate::node_args::NodeArgs,
    /// Stop after this many messages.
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Subscribe under this durable name: the node keeps what is published
    /// on the prefixes until it is printed (and acknowledged), so a run
    /// started again under the same name prints first what it missed
    /// (docs/durable.md). Each line starts with the message's sequence
    /// number.
    #[arg(long, value_name = "NAME")]
    durable: Option<String>,
    /// The service id the durable subscription belongs to [default: the
    /// id the configuration binds --key-file to, else zmanager-subscribe].
    #[arg(long, value_name = "ID", requires = "durable")]
    service: Option<String>,
    /// Messages of the durable subscription sent and unacknowledged at once.
    #[arg(long, default_value_t = 100, requires = "durable")]
    window: u32,
}

/// One published message as a line.
fn line(topic: &str, e: &zmanager_client::wire::envelope::Envelope, payload: &[u8]) -> String {
    let shown = zmanager_sdk::decode::<serde_json::Value>(payload).map_or_else(
        |e| format!("<{} bytes: {e}>", payload.len()),
        |v| v.to_string(),
    );
    let status = match &e.error {
        Some(error) => format!(
            "error {} {}: {}",
            u16::from(error.code),
            error.name,
            error.message
        ),
        None => "ok".to_owned(),
    };
    format!(
        "{topic} id={} flow={} step={} {status} {shown}",
        e.id, e.flow, e.step
    )
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut options = args.node.service("subscribe")?;
    let prefixes = if args.topics.is_empty() {
        vec![String::new()]
    } else {
        args.topics
    };
    let count = args.count;
    crate::runtime(false)?.block_on(async move {
        let mut seen = 0u64;
        if let Some(name) = args.durable {
            if args.service.is_some() {
                options.id = args.service;
            }
            if options.id.is_none() {
                options.id = Some("zmanager-subscribe".to_owned());
            }
            let service = std::sync::Arc::new(Service::connect(options).await?);
            let mut durable = service
                .subscribe_durable(&name, &prefixes, args.window)
                .await?;
            while let Some(d) = durable.next().await? {
                println!("{} {}", d.seq, line(&d.topic, &d.envelope, &d.payload));
                durable.ack(d.seq).await?;
                seen += 1;
                if count.is_some_and(|n| seen >= n) {
                    break;
                }
            }
            durable.flush().await?;
            return Ok(ExitCode::SUCCESS);
        }
        let mut subscription =
            Subscription::connect_with(&options.publish, options.keys.as_ref(), &prefixes)?;
        while let Some(published) = subscription.next().await {
            println!(
                "{}",
                line(&published.topic, &published.envelope, &published.payload)
            );
            seen += 1;
            if count.is_some_and(|n| seen >= n) {
                break;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
