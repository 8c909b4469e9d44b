//! A real HTTP client (ureq) for a node's HTTP server: every status is an
//! answer, not an error, so tests assert on what the node said.

use std::time::Duration;

use crate::node::TestNode;

/// An answer: status, headers and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The header `name` (lower case), if given.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A client of one node's HTTP server.
#[derive(Debug, Clone)]
pub struct Http {
    base: String,
    agent: ureq::Agent,
}

impl Http {
    /// The client of `node`'s HTTP server.
    pub fn of(node: &TestNode) -> Self {
        let at = node.http.as_deref().expect("the node's HTTP server is on");
        Self::at(at)
    }

    /// The client of the server at `host:port`.
    pub fn at(at: &str) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Self {
            base: format!("http://{at}"),
            agent,
        }
    }

    /// `GET path` with `headers`.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        answer(request.call(), path)
    }

    /// Asks `GET path` until `done` holds for its answer (every 50 ms,
    /// for at most `limit`); returns that answer.
    pub fn poll(&self, path: &str, limit: Duration, done: impl Fn(&Answer) -> bool) -> Answer {
        let until = std::time::Instant::now() + limit;
        loop {
            let answer = self.get(path, &[]);
            if done(&answer) {
                return answer;
            }
            assert!(
                std::time::Instant::now() < until,
                "{path}: {} {}",
                answer.status,
                answer.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `POST path` with `headers` and `body`.
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let mut request = self.agent.post(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        answer(request.send(body), path)
    }

    /// `POST path` with a JSON body.
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Answer {
        let body = serde_json::to_vec(body).expect("JSON");
        self.post(path, &[("content-type", "application/json")], &body)
    }
}

fn answer(sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>, path: &str) -> Answer {
    let mut response = sent.unwrap_or_else(|e| panic!("{path}: {e}"));
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap_or_else(|e| panic!("{path}: reading the body: {e}"));
    Answer {
        status: response.status().as_u16(),
        headers,
        body,
    }
}
