//! `zmanager services`: list the services registered with a node, or serve
//! DigitalPy's service-management flows.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use zmanager::services::durable::DurableInfo;
use zmanager::services::management;
use zmanager::services::registry::{self, ServiceInfo};
use zmanager::services::steps::StepsInfo;
use zmanager_client::Service;

use crate::node_args::NodeArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List registered services, up or down, and the services given steps:
    /// UP or DOWN, backlog, oldest wait, next retry, last error (the
    /// default).
    List,
    /// Run the service that answers the ServiceManagement_* flows of
    /// flows/service_management.ini, until Ctrl-C.
    Serve,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let options = args.node.service("services")?;
    match args.command.unwrap_or(Command::List) {
        Command::List => crate::runtime(false)?.block_on(async move {
            let service = Service::connect(options).await?;
            let list = tokio::time::timeout(
                Duration::from_secs(10),
                service.request(registry::LIST, &()),
            )
            .await
            .context("no answer from the node within 10s")??;
            let services: Vec<ServiceInfo> = list.decode()?;
            if services.is_empty() {
                println!("no services registered");
            } else {
                println!("ID\tSTATUS\tLAST SEEN\tTOPICS\tFLOWS");
            }
            for s in services {
                println!(
                    "{}\t{}\tlast_seen={}ms\ttopics={}\tflows={}",
                    s.id,
                    s.status,
                    s.last_seen_ms,
                    s.topics.join(","),
                    s.flows.join(",")
                );
            }
            let steps = tokio::time::timeout(
                Duration::from_secs(10),
                service.request(registry::STEPS, &()),
            )
            .await
            .context("no answer from the node within 10s")??;
            let steps: Vec<StepsInfo> = steps.decode()?;
            if !steps.is_empty() {
                println!();
                println!(
                    "STEPS FOR\tSTATUS\tBACKLOG\tSENT\tINSTANCES\tOLDEST\tNEXT TRY\tLAST ERROR"
                );
            }
            for s in steps {
                let seconds = |ms: Option<u64>| {
                    ms.map_or_else(
                        || "-".to_owned(),
                        |ms| format!("{:.1}s", ms as f64 / 1000.0),
                    )
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    s.service,
                    s.status,
                    s.backlog,
                    s.sent,
                    s.instances,
                    seconds(s.oldest_ms),
                    seconds(s.next_try_ms),
                    s.last_error.as_deref().unwrap_or("-")
                );
            }
            let durables = tokio::time::timeout(
                Duration::from_secs(10),
                service.request(registry::DURABLES, &()),
            )
            .await
            .context("no answer from the node within 10s")??;
            let durables: Vec<DurableInfo> = durables.decode()?;
            if !durables.is_empty() {
                println!();
                println!("DURABLE OF\tNAME\tPREFIXES\tBACKLOG\tUNACKED\tACKED\tDROPPED");
            }
            for d in durables {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    d.service,
                    d.name,
                    d.prefixes.join(","),
                    d.backlog,
                    d.unacked,
                    d.acked,
                    d.dropped
                );
            }
            Ok(ExitCode::SUCCESS)
        }),
        Command::Serve => crate::runtime(true)?.block_on(async move {
            let service = Arc::new(Service::connect(options).await?);
            let topics: Vec<String> = management::FLOWS
                .iter()
                .map(|f| format!("{f}~PUBLISH~"))
                .collect();
            let flows: Vec<String> = management::FLOWS.iter().map(|f| (*f).to_owned()).collect();
            service.register(&topics, &flows).await?;
            let beat = service.heartbeat_every(Duration::from_secs(3), topics, flows);
            let stop = zmanager::node::shutdown::on_signal();
            let id = service.id().to_owned();
            let served = management::serve(&service, stop, || {
                // One line a script or test can read, once requests will be seen.
                println!("service management serving as {id}");
            })
            .await;
            beat.abort();
            served?;
            Ok(ExitCode::SUCCESS)
        }),
    }
}
