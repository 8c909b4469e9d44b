//! The exporter's HTTP client: `ureq`, blocking, plain HTTP (no TLS
//! stack). The SDK's batch processor exports on a thread of its own and
//! drives the export future with a simple executor, so a blocking call
//! there blocks that thread only, and no async runtime is needed.

use std::time::Duration;

use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};

/// The most of a collector's answer read (it is a small protobuf).
const MAX_ANSWER: u64 = 1 << 20;

#[derive(Debug)]
pub(super) struct Ureq(ureq::Agent);

impl Ureq {
    pub(super) fn new(timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // The exporter reads the status itself.
            .http_status_as_error(false)
            .build();
        Self(ureq::Agent::new_with_config(config))
    }
}

#[async_trait::async_trait]
impl HttpClient for Ureq {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, body.to_vec());
        let mut answer = self.0.run(request)?;
        let body = answer
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()?;
        let (parts, _) = answer.into_parts();
        Ok(Response::from_parts(parts, Bytes::from(body)))
    }
}
