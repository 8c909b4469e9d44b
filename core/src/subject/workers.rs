//! The workers: their messages (READY, SERVES, RESULT, HEARTBEAT), the
//! catalog versions each can run (`wire::catalogs`), liveness, and
//! dispatch of pending work by credits.

use zeromq::ZmqMessage;

use super::core::{Effect, SubjectCore};
use crate::inflight::{WorkerId, key_of};
use crate::journal::Event;
use crate::wire::{self, FromWorker};

fn worker_name(worker: &WorkerId) -> String {
    String::from_utf8_lossy(worker).into_owned()
}

impl SubjectCore {
    pub(super) fn on_worker(&mut self, frames: ZmqMessage) {
        let mut frames = frames.into_vec();
        if frames.is_empty() {
            return;
        }
        let worker = frames.remove(0);
        let known = self.table.heard(&worker, self.now.at);
        let (what, bad) = match wire::decode_from_worker(&frames) {
            Ok(decoded) => decoded,
            Err(e) => {
                tracing::error!(worker = %worker_name(&worker), error = %e, "malformed message from a worker");
                return;
            }
        };
        for e in bad {
            tracing::error!(worker = %worker_name(&worker), error = %e, "a result from a worker does not decode");
        }
        match what {
            FromWorker::Ready(ready) => {
                let lost =
                    self.table
                        .worker_ready(worker.clone(), ready.credits, ready.pid, self.now.at);
                tracing::info!(worker = %worker_name(&worker), pid = ready.pid, credits = ready.credits, "worker ready");
                self.retry_or_dead_letter(lost, "its worker announced itself again");
                self.offer_catalogs(&worker, &ready.catalogs);
            }
            FromWorker::Serves(serves) => {
                if !known {
                    return;
                }
                for (version, why) in &serves.refused {
                    tracing::error!(worker = %worker_name(&worker), version, "the worker cannot run this catalog version: {why}");
                }
                // Only versions held: an answer to an offer of a version
                // since let go adds nothing.
                let held: Vec<u32> = serves
                    .versions
                    .iter()
                    .copied()
                    .filter(|v| self.catalogs.get(*v).is_some() && *v != 0)
                    .collect();
                self.table.serve(&worker, &held);
            }
            FromWorker::Heartbeat => {
                if !known {
                    tracing::debug!(worker = %worker_name(&worker), "heartbeat from an unknown worker; it will reconnect");
                }
            }
            FromWorker::Results(results) => {
                for result in results {
                    self.on_result(&worker, result);
                }
            }
        }
    }

    /// Tells `worker` of every catalog version held, with the files of
    /// those whose digest it does not list in `has`; it serves at once the
    /// versions it has, the others once it says it can.
    fn offer_catalogs(&mut self, worker: &WorkerId, has: &[String]) {
        let mut served = Vec::new();
        let mut offers = Vec::new();
        for version in self.catalogs.all() {
            let known = has.contains(&version.digest);
            if known {
                served.push(version.number);
            }
            offers.push(crate::wire::catalogs::Offer {
                version: version.number,
                digest: version.digest.clone(),
                sources: (!known).then(|| (*version.sources).clone()),
            });
        }
        self.table.serve(worker, &served);
        for offer in offers {
            let mut frames = crate::wire::catalogs::offer(&offer);
            frames.push_front(worker.clone());
            self.emit(Effect::ToWorker(worker.clone(), frames));
        }
    }

    /// A new catalog version: the newest from now on. Every worker is told
    /// of it, and runs its messages once it says it can.
    pub(super) fn on_reload(&mut self, version: crate::catalog::version::Versioned) {
        tracing::info!(version = version.number, digest = %version.digest, "catalog version added: new requests run on it");
        let offer = crate::wire::catalogs::Offer {
            version: version.number,
            digest: version.digest.clone(),
            sources: Some((*version.sources).clone()),
        };
        self.catalogs.insert(version);
        let workers: Vec<WorkerId> = self.table.workers().cloned().collect();
        for worker in workers {
            let mut frames = crate::wire::catalogs::offer(&offer);
            frames.push_front(worker.clone());
            self.emit(Effect::ToWorker(worker, frames));
        }
    }

    /// A worker is gone, silent or stuck: its messages are sent again
    /// elsewhere (or dead-lettered), and if it may still be running, its
    /// process is killed so the supervisor replaces it.
    pub(super) fn lose_worker(&mut self, worker: &WorkerId, reason: &str, kill: bool) {
        let Some(pid) = self.table.pid(worker) else {
            return;
        };
        let lost = self.table.worker_lost(worker);
        self.counters.workers_lost += 1;
        tracing::warn!(worker = %worker_name(worker), pid, reason, messages = lost.len(), "worker lost");
        let reason = format!("worker {} lost: {reason}", worker_name(worker));
        self.retry_or_dead_letter(lost, &reason);
        if kill {
            self.emit(Effect::Kill(pid));
        }
    }

    /// Heartbeats every worker; loses the silent and the stuck; ends the
    /// `@ASYNC` flows past their deadline.
    pub(super) fn on_tick(&mut self) {
        let now = self.now.at;
        self.expire_suspended();
        self.tick_services();
        for worker in self.table.silent_workers(now, self.options.liveness) {
            let reason = format!("no heartbeat for {} ms", self.options.liveness.as_millis());
            self.lose_worker(&worker, &reason, true);
        }
        let limit = self.options.message_timeout + self.options.liveness;
        for worker in self.table.overdue_workers(now, limit) {
            let reason = format!("a message ran past {} ms", limit.as_millis());
            self.lose_worker(&worker, &reason, true);
        }
        let workers: Vec<WorkerId> = self.table.workers().cloned().collect();
        for worker in workers {
            let mut frames = wire::heartbeat();
            frames.push_front(worker.clone());
            self.emit(Effect::ToWorker(worker, frames));
        }
    }

    /// Sends pending messages to workers with free credits.
    pub(super) fn dispatch(&mut self) {
        self.start_waiting();
        while let Some((worker, mut batch)) = self.table.next_batch(self.options.batch, self.now.at)
        {
            if self.options.record_spans {
                let pid = self.table.pid(&worker);
                for m in &mut batch {
                    // The copy sent names its dispatch span; the one kept
                    // in flight does not (a copy, with spans on only).
                    let sent = std::sync::Arc::make_mut(m);
                    self.spans
                        .dispatched(&mut sent.envelope, pid, self.now.wall_us);
                }
            }
            if self.commits.is_on() {
                let at_us = self.now.wall_us;
                for m in &batch {
                    self.commits.record(|| Event::Dispatched {
                        at_us,
                        key: key_of(&m.envelope),
                        attempt: m.envelope.attempt,
                        worker: worker.clone(),
                    });
                }
            }
            let mut frames = wire::work(batch.iter().map(|m| &**m));
            frames.push_front(worker.clone());
            self.emit(Effect::ToWorker(worker, frames));
        }
    }
}
