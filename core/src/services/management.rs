//! The service-management service: answers DigitalPy's four
//! service-management flows (`flows/service_management.ini`).
//!
//! Each of those flows publishes its request at a `@PUBLISH` step and
//! suspends at the `@ASYNC` step after it. This service subscribes to those
//! `@PUBLISH` topics, reads or changes the node's registry through the
//! built-in flows of [`crate::services::registry`], and answers, which resumes
//! the flow; `done` then publishes the answer to the requester. It is an
//! ordinary service (any number may run; the first answer wins, the others
//! get `unknown_async`), run by `zmanager services serve`.

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::services::registry::{self, Registration, ServiceInfo};
use crate::wire::error_code::ErrorCode;
use zmanager_client::{Published, Service, ServiceError};

/// The flows answered, and the `@PUBLISH` topic prefix of each.
pub const FLOWS: [&str; 4] = [
    "ServiceManagement_GetServiceTopics",
    "ServiceManagement_PutServiceTopic",
    "ServiceManagement_DeleteServiceTopic",
    "ServiceManagement_GetServiceStatus",
];

/// The request of the four flows.
#[derive(Debug, Default, Deserialize)]
struct Query {
    #[serde(default, alias = "id")]
    service: String,
    #[serde(default)]
    topic: String,
}

/// The answer of GetServiceTopics, PutServiceTopic and DeleteServiceTopic.
#[derive(Debug, Serialize)]
struct Topics<'a> {
    service: &'a str,
    topics: &'a [String],
}

/// The answer of GetServiceStatus.
#[derive(Debug, Serialize)]
struct StatusAnswer<'a> {
    service: &'a str,
    status: &'a str,
    last_seen_ms: u64,
}

/// Serves until `stop` is cancelled (or the subscription ends).
/// `on_ready` is called once the subscription to the flows' PUBLISH topics
/// is live: requests sent before it could find nobody listening.
pub async fn serve(
    service: &Service,
    stop: CancellationToken,
    on_ready: impl FnOnce(),
) -> Result<(), ServiceError> {
    let prefixes: Vec<String> = FLOWS.iter().map(|f| format!("{f}~PUBLISH~")).collect();
    let mut subscription = service.subscribe(&prefixes).await?;
    on_ready();
    tracing::info!(service = %service.id(), "service management: serving {}", FLOWS.join(", "));
    loop {
        let published = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            next = subscription.next() => match next {
                Some(p) => p,
                None => return Err(ServiceError::Closed),
            },
        };
        if let Err(e) = answer(service, &published).await {
            tracing::warn!(id = %published.envelope.id, error = %e, "service management: cannot answer");
        }
    }
}

async fn answer(service: &Service, published: &Published) -> Result<(), ServiceError> {
    let query: Query = if published.payload.as_ref() == [0xc0] {
        Query::default()
    } else {
        match zmanager_sdk::decode(&published.payload) {
            Ok(q) => q,
            Err(e) => {
                let text = format!("expected {{\"service\": id, \"topic\": topic}}: {e}");
                return service
                    .answer_error(published, ErrorCode::BadRequest, text)
                    .await;
            }
        }
    };
    if query.service.is_empty() {
        let text = "no `service` in the request".to_owned();
        return service
            .answer_error(published, ErrorCode::BadRequest, text)
            .await;
    }
    let flow = published.envelope.flow.as_str();
    let registry_flow = match flow {
        "ServiceManagement_PutServiceTopic" => registry::ADD_TOPIC,
        "ServiceManagement_DeleteServiceTopic" => registry::REMOVE_TOPIC,
        _ => registry::LIST,
    };
    let request = Registration {
        id: query.service.clone(),
        topic: query.topic,
        ..Registration::default()
    };
    let info: ServiceInfo = if registry_flow == registry::LIST {
        let all: Vec<ServiceInfo> = service.request(registry_flow, &()).await?.decode()?;
        match all.into_iter().find(|s| s.id == query.service) {
            Some(info) => info,
            None => {
                let text = format!("no service {:?} is registered", query.service);
                return service
                    .answer_error(published, ErrorCode::UnknownService, text)
                    .await;
            }
        }
    } else {
        match service.request(registry_flow, &request).await {
            Ok(reply) => reply.decode()?,
            Err(ServiceError::Failed { error, .. }) => {
                return service
                    .answer_error(published, error.code, error.message)
                    .await;
            }
            Err(e) => return Err(e),
        }
    };
    if flow == "ServiceManagement_GetServiceStatus" {
        let status = StatusAnswer {
            service: &info.id,
            status: &info.status,
            last_seen_ms: info.last_seen_ms,
        };
        service.answer(published, &status).await
    } else {
        let topics = Topics {
            service: &info.id,
            topics: &info.topics,
        };
        service.answer(published, &topics).await
    }
}
