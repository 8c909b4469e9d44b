//! A service that takes a step of a flow: `moderator` approves each text
//! of the `Review` flow (Text.trim → moderator → Text.upper) or refuses it,
//! and the flow goes on with its answer. Run it beside a node:
//!
//! ```sh
//! cargo run --release -p zmanager-cli -- up                 # terminal 1
//! cargo run -p zmanager-examples --example moderator    # terminal 2
//! cargo run -p zmanager-cli -- send Review -p '"  a fine text "'   # terminal 3
//! ```
//!
//! The third prints `"A FINE TEXT (APPROVED)"`; a text containing `spam`
//! is refused with code 7. Arguments: `[CREDITS] [INTAKE] [PUBLISH]`
//! (defaults: 16 and the node's default endpoints). It prints one line per
//! step it is given, `step ORIGIN ID` (the same pair again when the node
//! gives a step again: answer it again the same way).

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use zmanager_client::{Endpoints, ErrorCode, Published, Service, ServiceOptions, StepError};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let credits: u32 = args.next().map_or(Ok(16), |n| n.parse())?;
    let defaults = Endpoints::default();
    let endpoints = Endpoints {
        intake: args.next().unwrap_or(defaults.intake),
        publish: args.next().unwrap_or(defaults.publish),
    };
    let mut options = ServiceOptions::with_endpoints("moderator", endpoints);
    // The name the node's `[services]` mapping gives the step to.
    options.id = Some("moderator".into());
    let service = Arc::new(Service::connect(options).await?);
    let server = service
        .serve_steps(credits, |step| {
            // The handler is called in the order the steps arrive (the
            // future it returns runs concurrently with the others).
            {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "step {} {}", step.envelope.service, step.envelope.id);
                let _ = out.flush();
            }
            moderate(step)
        })
        .await?;
    eprintln!("moderator: taking steps on {}", server.topic());
    tokio::signal::ctrl_c().await?;
    server.stop().await?;
    Ok(())
}

/// Approves a text, or refuses it if it is spam.
async fn moderate(step: Published) -> Result<Bytes, StepError> {
    let text: String = zmanager_client::wire::decode(&step.payload)?;
    if text.contains("spam") {
        return Err(StepError {
            code: ErrorCode::ActionFailed,
            message: "refused by the moderator".into(),
        });
    }
    Ok(Bytes::from(rmp_serde::to_vec(&format!(
        "{text} (approved)"
    ))?))
}
