//! Who makes an HTTP request: the service it acts as.
//!
//! With `[security]`, a request names its service with a bearer token
//! (`Authorization: Bearer …`) whose SHA-256 digest the service's entry
//! lists (`http_token`), and has exactly that service's grants. Without
//! keys, the node trusts its (loopback) callers: the service is the one
//! named in the `Zmanager-Service` header or the `service` query
//! parameter, `http` when neither is given.

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode, header};

use super::error::ApiError;
use crate::security::{Permissions, SecurityConfig};

/// The header naming the service on a node without keys.
pub const SERVICE_HEADER: &str = "zmanager-service";

/// The service of requests that name none, on a node without keys.
pub const DEFAULT_SERVICE: &str = "http";

/// The most bytes of a service id named over HTTP.
const MAX_SERVICE_ID: usize = 128;

/// The service an HTTP request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub service: String,
    /// True when a token proved it (security on): the Subject then holds
    /// it to that service's grants, as for a CURVE key.
    pub authenticated: bool,
}

impl Caller {
    /// The id the Subject is told the request comes from (`None`: a node
    /// without keys, which reads the envelope's `service`).
    pub fn bound(&self) -> Option<String> {
        self.authenticated.then(|| self.service.clone())
    }

    /// Refuses unless this caller is `service` (a request's state and
    /// journey are its own service's to read).
    pub fn must_be(&self, service: &str) -> Result<(), ApiError> {
        if self.authenticated && self.service != service {
            return Err(ApiError::coded(
                crate::wire::error_code::ErrorCode::WrongService,
                format!(
                    "this token is service {:?}'s, not {service:?}'s",
                    self.service
                ),
            ));
        }
        Ok(())
    }

    /// Refuses unless this caller may operate the node (`operate = true`:
    /// dead letters, workers). Every caller may on a node without keys.
    pub fn must_operate(&self, permissions: &Permissions) -> Result<(), ApiError> {
        if self.authenticated && !permissions.may_operate(&self.service) {
            return Err(ApiError::coded(
                crate::wire::error_code::ErrorCode::Forbidden,
                format!(
                    "service {:?} may not operate this node: its [[security.service]] entry needs operate = true",
                    self.service
                ),
            ));
        }
        Ok(())
    }
}

/// How callers are told apart.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    /// Service ids by the SHA-256 digest of their token; `None`: no keys.
    by_digest: Option<HashMap<[u8; 32], String>>,
}

impl Identities {
    /// Callers name themselves (a node without keys).
    pub fn open() -> Self {
        Self { by_digest: None }
    }

    /// Callers prove who they are with the tokens `[security]` lists.
    pub fn of(config: &SecurityConfig) -> Self {
        let by_digest = config
            .services
            .iter()
            .filter_map(|s| {
                let digest = crate::security::token::parse_digest(s.http_token.as_deref()?).ok()?;
                Some((digest, s.id.clone()))
            })
            .collect();
        Self {
            by_digest: Some(by_digest),
        }
    }

    /// True when tokens are required.
    pub fn required(&self) -> bool {
        self.by_digest.is_some()
    }

    /// Who sent a request with these headers (`named`: the `service` query
    /// parameter, if any).
    pub fn caller(&self, headers: &HeaderMap, named: Option<&str>) -> Result<Caller, ApiError> {
        let header_named = headers.get(SERVICE_HEADER).map(|v| {
            v.to_str()
                .map_err(|_| bad_service("the Zmanager-Service header is not text"))
        });
        let named = match (header_named.transpose()?, named) {
            (Some(a), Some(b)) if a != b => {
                return Err(bad_service(format!(
                    "the Zmanager-Service header says {a:?}, the query {b:?}"
                )));
            }
            (a, b) => a.or(b),
        };
        let Some(by_digest) = &self.by_digest else {
            let service = named.unwrap_or(DEFAULT_SERVICE);
            check_id(service)?;
            return Ok(Caller {
                service: service.to_owned(),
                authenticated: false,
            });
        };
        let token = bearer(headers)?;
        let digest = crate::security::token::digest(token);
        let Some(service) = by_digest.get(&digest) else {
            return Err(unauthorized("the token is not one [security] lists"));
        };
        if let Some(named) = named
            && named != service
        {
            return Err(ApiError::coded(
                crate::wire::error_code::ErrorCode::WrongService,
                format!("this token is service {service:?}'s, not {named:?}'s"),
            ));
        }
        Ok(Caller {
            service: service.clone(),
            authenticated: true,
        })
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        unauthorized("this node has [security]: send Authorization: Bearer <token>")
    })?;
    let text = value
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not text"))?;
    let (scheme, token) = text
        .split_once(' ')
        .ok_or_else(|| unauthorized("the Authorization header is not `Bearer <token>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(unauthorized(
            "the Authorization header is not `Bearer <token>`",
        ));
    }
    Ok(token.trim())
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::http(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

fn bad_service(message: impl Into<String>) -> ApiError {
    ApiError::http(StatusCode::BAD_REQUEST, "bad_service", message)
}

/// A service id named over HTTP: what a topic can carry.
fn check_id(service: &str) -> Result<(), ApiError> {
    let fine = !service.is_empty()
        && service.len() <= MAX_SERVICE_ID
        && service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if fine {
        Ok(())
    } else {
        Err(bad_service(format!(
            "service {service:?}: 1 to {MAX_SERVICE_ID} letters, digits, '-', '_' or '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::ServiceKey;

    fn with(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        headers
    }

    #[test]
    fn without_keys_a_caller_names_its_service() {
        let open = Identities::open();
        let caller = open.caller(&HeaderMap::new(), None).unwrap();
        assert_eq!(caller.service, "http");
        assert_eq!(caller.bound(), None);
        let caller = open
            .caller(&with(&[(SERVICE_HEADER, "shop")]), Some("shop"))
            .unwrap();
        assert_eq!(caller.service, "shop");
        let clash = open
            .caller(&with(&[(SERVICE_HEADER, "a")]), Some("b"))
            .unwrap_err();
        assert_eq!(clash.status, StatusCode::BAD_REQUEST);
        for bad in ["", "a~b", "@reply", &"x".repeat(129)] {
            assert!(
                open.caller(&HeaderMap::new(), Some(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn with_keys_only_a_listed_token_names_a_service() {
        let config = SecurityConfig {
            key_file: "node.key".into(),
            services: vec![ServiceKey {
                id: "ada".into(),
                public_key: String::new(),
                subscribe: vec![],
                push: vec![],
                answer: vec![],
                register: false,
                operate: false,
                http_token: Some(crate::security::token::show_digest("s3cret")),
            }],
            workers: vec![],
        };
        let ids = Identities::of(&config);
        let caller = ids
            .caller(&with(&[("authorization", "Bearer s3cret")]), None)
            .unwrap();
        assert_eq!(caller.bound().as_deref(), Some("ada"));
        assert!(caller.must_be("bob").is_err());
        for headers in [
            HeaderMap::new(),
            with(&[("authorization", "Bearer wrong")]),
            with(&[("authorization", "Basic s3cret")]),
            with(&[("authorization", "Bearer ")]),
        ] {
            let refused = ids.caller(&headers, None).unwrap_err();
            assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        }
        // Operating the node takes `operate`; without keys, everyone may.
        let mut operating = config.clone();
        let refused = caller
            .must_operate(&crate::security::Permissions::of(&config))
            .unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        operating.services[0].operate = true;
        let permissions = crate::security::Permissions::of(&operating);
        assert!(caller.must_operate(&permissions).is_ok());
        let open = Identities::open().caller(&HeaderMap::new(), None).unwrap();
        assert!(
            open.must_operate(&crate::security::Permissions::of(&config))
                .is_ok()
        );
        // Naming itself as another service is refused, not ignored.
        let posing = ids
            .caller(&with(&[("authorization", "Bearer s3cret")]), Some("bob"))
            .unwrap_err();
        assert_eq!(posing.status, StatusCode::FORBIDDEN);
    }
}
