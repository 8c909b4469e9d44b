//! Changing a running node's flows and mappings (`docs/reload.md`):
//! `zmanager reload`, `POST /v1/reload` and SIGHUP.
//!
//! A reload reads the configured directories again and checks the files
//! as `zmanager up` does (the catalog, the components the node loaded,
//! `[security]`'s steps): on any error nothing changes and every error is
//! said. Files the same as the newest version's change nothing. Otherwise
//! the version is recorded in the journal — before any request runs on
//! it, so recovery after a crash finds it — and handed to the Subject,
//! which runs new requests on it and tells the workers
//! (`wire::catalogs`). Requests already accepted finish on their own
//! version.
//!
//! - `diff`: what a reload changes (flows and steps added, removed,
//!   changed);
//! - this module: the versions at start-up, and the task that reloads,
//!   one reload at a time.

pub mod diff;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::NodeError;
use super::config::NodeConfig;
use crate::catalog::version::{Catalogs, Sources, Versioned};
use crate::components::registry::Registry;
use crate::journal::{Backend, CatalogLog, Unfinished};
use crate::subject::Ask;

/// The versions a node starts with: the files on disk as the newest — the
/// journal's newest version if they are the same, else a new version,
/// recorded — and every older version an unfinished request uses, from
/// the journal.
pub fn at_start(
    journal: Option<&Backend>,
    sources: Sources,
    catalog: crate::catalog::Catalog,
    unfinished: &[Unfinished],
) -> Result<Catalogs, NodeError> {
    let digest = sources.digest();
    let Some(journal) = journal else {
        return Ok(Catalogs::new(Versioned {
            number: 1,
            digest,
            sources: Arc::new(sources),
            catalog: Arc::new(catalog),
        }));
    };
    let recorded = journal.catalogs()?;
    let number = match recorded.last() {
        Some(last) if last.digest == digest => last.version,
        last => {
            let number = last.map_or(1, |l| l.version + 1);
            journal.record_catalog(number, &sources, crate::wire::envelope::now_us())?;
            number
        }
    };
    tracing::info!(version = number, %digest, "catalog version");
    let mut catalogs = Catalogs::new(Versioned {
        number,
        digest,
        sources: Arc::new(sources),
        catalog: Arc::new(catalog),
    });
    let used: std::collections::BTreeSet<u32> = unfinished
        .iter()
        .map(|u| u.message.envelope.catalog)
        .filter(|v| *v != 0 && *v != number)
        .collect();
    for old in recorded.into_iter().filter(|r| used.contains(&r.version)) {
        let (catalog, diagnostics) = old.sources.build();
        if diagnostics.has_errors() {
            // Recovery ends its requests with the reason.
            tracing::error!(
                version = old.version,
                "a recorded catalog version does not build:\n{diagnostics}"
            );
            continue;
        }
        tracing::info!(
            version = old.version,
            "catalog version kept for the unfinished requests accepted under it"
        );
        catalogs.insert(Versioned {
            number: old.version,
            digest: old.digest,
            sources: Arc::new(old.sources),
            catalog: Arc::new(catalog),
        });
    }
    Ok(catalogs)
}

/// What a reload did, or would do.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// `reloaded`, `unchanged`, `dry_run` or `invalid`.
    pub outcome: &'static str,
    /// The newest version now (`dry_run`: the one it would be).
    pub version: u32,
    pub digest: String,
    pub changes: diff::Changes,
    /// Unfinished requests on each version held, before the reload.
    pub in_flight: BTreeMap<u32, usize>,
    /// Every error (and warning) the files have.
    pub diagnostics: Vec<String>,
}

/// A reload asked for.
type Asked = (bool, oneshot::Sender<Result<Outcome, String>>);

/// Asks the node to reload (a handle of its reloading task).
#[derive(Debug, Clone)]
pub struct Reloader(mpsc::Sender<Asked>);

impl Reloader {
    /// Reloads (or, with `dry_run`, says what a reload would change).
    /// `Err`: the node is stopping or the journal cannot record it.
    pub async fn reload(&self, dry_run: bool) -> Result<Outcome, String> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send((dry_run, reply))
            .await
            .map_err(|_| "the node is stopping".to_owned())?;
        answer
            .await
            .map_err(|_| "the node is stopping".to_owned())?
    }
}

/// What the reloading task needs.
#[derive(Debug)]
pub struct Reloading {
    pub config: NodeConfig,
    pub registry: Registry,
    /// Its own connection to the journal (`None`: the journal is off).
    pub journal: Option<Arc<std::sync::Mutex<Backend>>>,
    pub asks: mpsc::Sender<Ask>,
    /// The newest version at start.
    pub newest: Versioned,
    /// Where the HTTP server reads the newest catalog.
    pub current: crate::catalog::version::Current,
}

/// Starts the reloading task; reloads run one at a time.
pub fn start(reloading: Reloading) -> Reloader {
    let (tx, mut rx) = mpsc::channel::<Asked>(8);
    tokio::spawn(async move {
        let mut state = reloading;
        while let Some((dry_run, reply)) = rx.recv().await {
            let outcome = reload(&mut state, dry_run).await;
            match &outcome {
                Ok(o) => {
                    tracing::info!(outcome = o.outcome, version = o.version, changes = %o.changes, "reload")
                }
                Err(e) => tracing::error!(error = %e, "reload failed"),
            }
            let _ = reply.send(outcome);
        }
    });
    Reloader(tx)
}

async fn reload(state: &mut Reloading, dry_run: bool) -> Result<Outcome, String> {
    let (sources, catalog, mut diagnostics) = state.config.load_versioned();
    state.registry.check(&catalog, &mut diagnostics);
    let digest = sources.digest();
    let said: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    let in_flight = versions(&state.asks).await?;
    let changes = diff::between(&state.newest.catalog, &catalog);
    let mut outcome = Outcome {
        outcome: "invalid",
        version: state.newest.number,
        digest: state.newest.digest.clone(),
        changes,
        in_flight,
        diagnostics: said,
    };
    if diagnostics.has_errors() {
        return Ok(outcome);
    }
    if digest == state.newest.digest {
        outcome.outcome = "unchanged";
        return Ok(outcome);
    }
    let number = state.newest.number + 1;
    outcome.version = number;
    outcome.digest.clone_from(&digest);
    if dry_run {
        outcome.outcome = "dry_run";
        return Ok(outcome);
    }
    if let Some(journal) = &state.journal {
        // Off the runtime's threads: the PostgreSQL client runs its own.
        let (journal, recording) = (Arc::clone(journal), sources.clone());
        tokio::task::spawn_blocking(move || {
            journal
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .record_catalog(number, &recording, crate::wire::envelope::now_us())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|recorded| recorded)
        .map_err(|e| format!("cannot record catalog version {number} in the journal: {e}"))?;
    }
    let version = Versioned {
        number,
        digest,
        sources: Arc::new(sources),
        catalog: Arc::new(catalog),
    };
    let (reply, taken) = oneshot::channel();
    state
        .asks
        .send(Ask::Reload(Box::new(version.clone()), reply))
        .await
        .map_err(|_| "the node is stopping".to_owned())?;
    taken.await.map_err(|_| "the node is stopping".to_owned())?;
    state
        .current
        .set(version.number, Arc::clone(&version.catalog));
    state.newest = version;
    outcome.outcome = "reloaded";
    Ok(outcome)
}

async fn versions(asks: &mpsc::Sender<Ask>) -> Result<BTreeMap<u32, usize>, String> {
    let (reply, answer) = oneshot::channel();
    asks.send(Ask::Versions(reply))
        .await
        .map_err(|_| "the node is stopping".to_owned())?;
    tokio::time::timeout(std::time::Duration::from_secs(10), answer)
        .await
        .map_err(|_| "the Subject does not answer".to_owned())?
        .map_err(|_| "the node is stopping".to_owned())
}
