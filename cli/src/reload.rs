//! `zmanager reload`: a running node reads its flows and mappings again
//! (`docs/reload.md`), through its HTTP server (`POST /v1/reload`).
//! Prints what changed and every error; on any error nothing changes and
//! the command exits 1.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;
use zmanager::node::config::NodeConfig;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The node's configuration: its `[http] listen` is where to ask
    /// (unless `--http` says).
    #[arg(short, long, env = "ZMANAGER_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// The node's HTTP server, `host:port` (default: the configuration's
    /// `[http] listen`, else 127.0.0.1:19080).
    #[arg(long)]
    http: Option<String>,
    /// Say what the reload would change, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// A service's bearer token, on a node with `[security]` (the service
    /// needs `operate = true`).
    #[arg(long, env = "ZMANAGER_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let at = match &args.http {
        Some(at) => at.clone(),
        None => match &args.config {
            Some(path) => NodeConfig::from_file(path)?.http.listen,
            None => NodeConfig::default().http.listen,
        },
    };
    let url = format!(
        "http://{at}/v1/reload{}",
        if args.dry_run { "?dry_run=true" } else { "" }
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut request = agent.post(&url);
    if let Some(token) = &args.token {
        request = request.header("authorization", &format!("Bearer {token}"));
    }
    let mut answer = request
        .send_empty()
        .with_context(|| format!("cannot reach the node's HTTP server at {at}"))?;
    let status = answer.status().as_u16();
    let text = answer
        .body_mut()
        .read_to_string()
        .with_context(|| format!("cannot read the answer of the node at {at}"))?;
    let body: Value = serde_json::from_str(&text)
        .with_context(|| format!("the node at {at} answered {status} without JSON: {text}"))?;
    if let Some(error) = body.get("error") {
        bail!(
            "{} ({status}): {}",
            error["name"].as_str().unwrap_or("error"),
            error["message"].as_str().unwrap_or_default()
        );
    }
    print(&body);
    Ok(if body["outcome"] == "invalid" {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print(body: &Value) {
    let outcome = body["outcome"].as_str().unwrap_or_default();
    let version = &body["version"];
    match outcome {
        "reloaded" => println!("reloaded: catalog version {version}, new requests run on it"),
        "unchanged" => println!("unchanged: the files are catalog version {version}'s"),
        "dry_run" => {
            println!("dry run: the files would be catalog version {version}; nothing changed")
        }
        _ => println!("not reloaded: the files have errors; nothing changed"),
    }
    let changes = &body["changes"];
    let names = |key: &str| -> Vec<String> {
        changes[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    for flow in names("flows_added") {
        println!("  + flow {flow}");
    }
    for flow in names("flows_removed") {
        println!("  - flow {flow}");
    }
    for change in changes["flows_changed"].as_array().into_iter().flatten() {
        println!("  ~ flow {}", change["flow"].as_str().unwrap_or_default());
        for step in change["steps"].as_array().into_iter().flatten() {
            println!("      {}", step.as_str().unwrap_or_default());
        }
    }
    if let Some(in_flight) = body["in_flight"].as_object() {
        for (version, n) in in_flight {
            println!("  version {version}: {n} unfinished requests");
        }
    }
    for line in body["diagnostics"].as_array().into_iter().flatten() {
        println!("{}", line.as_str().unwrap_or_default());
    }
}
