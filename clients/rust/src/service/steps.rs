//! Serving the steps flows give to this service (`[services]` in the
//! node's mappings): [`Service::serve_steps`].
//!
//! The instance takes its steps on a topic of its own under the service's
//! reply topic (`@reply~ID~steps-SESSION~`), tells the node how many it
//! takes at once with a `take` message — sent again every
//! [`TAKE_EVERY`], which is also its heartbeat — and answers each step as
//! an `@ASYNC` one. The node gives a step again (same `origin` and `id`)
//! when its answer does not come in time, so a handler may see a step
//! twice: make it idempotent, or remember the `(origin, id)` pairs it
//! answered.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;

use super::{Published, Service, ServiceError};
use crate::wire::Message;
use crate::wire::envelope::Kind;
use crate::wire::error_code::ErrorCode;

/// How often an instance tells the node it is there (well inside the
/// node's `service_liveness`, 10 s by default).
pub const TAKE_EVERY: Duration = Duration::from_secs(1);

/// A handler's error: the flow ends with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub code: ErrorCode,
    pub message: String,
}

/// A payload that does not decode is the step's fault: `bad_request`.
impl From<rmp_serde::decode::Error> for StepError {
    fn from(e: rmp_serde::decode::Error) -> Self {
        Self {
            code: ErrorCode::BadRequest,
            message: format!("the step's payload does not decode: {e}"),
        }
    }
}

/// An answer that does not encode is the handler's: `action_failed`.
impl From<rmp_serde::encode::Error> for StepError {
    fn from(e: rmp_serde::encode::Error) -> Self {
        Self {
            code: ErrorCode::ActionFailed,
            message: format!("the answer does not encode: {e}"),
        }
    }
}

/// An instance serving steps; [`StepServer::stop`] (or dropping it) stops
/// it.
#[derive(Debug)]
pub struct StepServer {
    service: Arc<Service>,
    topic: String,
    task: JoinHandle<()>,
}

impl StepServer {
    /// The topic this instance takes its steps on.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Tells the node this instance takes no more steps (those it had go
    /// to the service's other instances, or wait), and stops.
    pub async fn stop(self) -> Result<(), ServiceError> {
        self.task.abort();
        self.service.take(&self.topic, 0).await
    }
}

impl Drop for StepServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Service {
    /// Serves the steps flows give to this service: up to `credits` at
    /// once, each passed to `handler` with its envelope and payload (the
    /// handler is called in the order the steps arrive; the futures it
    /// returns run concurrently); what
    /// the handler returns (MessagePack bytes) continues the flow at the
    /// next step, an error ends it. The service's id must be the name the
    /// node's `[services]` mappings give the steps to.
    pub async fn serve_steps<F, Fut>(
        self: &Arc<Self>,
        credits: u32,
        handler: F,
    ) -> Result<StepServer, ServiceError>
    where
        F: Fn(Published) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, StepError>> + Send + 'static,
    {
        let topic = format!("{}steps-{}~", self.reply_to, self.session);
        let mut steps = self.subscribe(std::slice::from_ref(&topic)).await?;
        self.take(&topic, credits).await?;
        let service = Arc::clone(self);
        let handler = Arc::new(handler);
        let take_topic = topic.clone();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(TAKE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    step = steps.next() => {
                        let Some(step) = step else { return };
                        // With keys the subscription also covers the
                        // service's reply topic, under which every instance
                        // of it takes its steps: only this one's are ours.
                        if step.envelope.kind != Kind::Step || step.topic != take_topic {
                            continue;
                        }
                        // Called here, in the order the steps came; its
                        // future runs beside the others'.
                        let answer = handler(step.clone());
                        let service = Arc::clone(&service);
                        tokio::spawn(async move {
                            let answered = match answer.await {
                                Ok(payload) => service.answer_bytes(&step, payload).await,
                                Err(e) => service.answer_error(&step, e.code, e.message).await,
                            };
                            if let Err(e) = answered {
                                tracing::warn!(id = %step.envelope.id, error = %e, "cannot answer a step");
                            }
                        });
                    }
                    _ = every.tick() => {
                        if let Err(e) = service.take(&take_topic, credits).await {
                            tracing::warn!(error = %e, "cannot tell the node this instance takes steps");
                        }
                    }
                }
            }
        });
        Ok(StepServer {
            service: Arc::clone(self),
            topic,
            task,
        })
    }

    /// Answers `published` with a payload already in MessagePack.
    pub async fn answer_bytes(
        &self,
        published: &Published,
        payload: Bytes,
    ) -> Result<(), ServiceError> {
        let envelope = self.answer_envelope(published);
        self.send(&Message::new(envelope, payload)).await
    }

    /// A `take`: this instance takes `credits` steps at once on `topic`.
    async fn take(&self, topic: &str, credits: u32) -> Result<(), ServiceError> {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut envelope = self.envelope(&format!("{}-take-{n}", self.session), "");
        envelope.kind = Kind::Take;
        topic.clone_into(&mut envelope.reply_to);
        let payload = rmp_serde::to_vec(&credits)?;
        self.send(&Message::new(envelope, Bytes::from(payload)))
            .await
    }
}
