//! The quickstart service: pushes requests into the `Greeting` flow (three
//! steps across two components: Text.trim → Greeter.greet → Text.upper) of
//! a running node and prints each result.
//!
//! ```sh
//! cargo run --release -p zmanager-cli -- up                  # terminal 1
//! cargo run -p zmanager-examples --example quickstart    # terminal 2
//! ```
//!
//! Arguments: `[COUNT] [INTAKE] [PUBLISH]` (defaults: 5 and the node's
//! default endpoints).

use zmanager_client::{Endpoints, Service, ServiceOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map_or(Ok(5), |n| n.parse())?;
    let defaults = Endpoints::default();
    let endpoints = Endpoints {
        intake: args.next().unwrap_or(defaults.intake),
        publish: args.next().unwrap_or(defaults.publish),
    };

    // Connecting completes a handshake: our reply topic is live before we
    // send anything, and only our own results are delivered to us.
    let service = Service::connect(ServiceOptions::with_endpoints("quickstart", endpoints)).await?;
    println!("service {} connected", service.id());

    // Requests run concurrently; each future resolves to its own result.
    let requests = (0..count).map(|i| {
        let service = &service;
        async move {
            let name = format!("  ada {i} ");
            let reply = service
                .request("Greeting", &serde_json::json!({ "name": name }))
                .await?;
            let value: serde_json::Value = reply.decode()?;
            anyhow::Ok((reply.envelope.id, value))
        }
    });
    let mut failed = 0;
    for outcome in futures::future::join_all(requests).await {
        match outcome {
            Ok((id, value)) => println!("{id}: {value}"),
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} of {count} requests failed");
    Ok(())
}
