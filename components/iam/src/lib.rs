//! The Iam component: one action, `authorize`, that lets a request through
//! only if its user may perform its action — what DigitalPy's IAM does
//! before every action. Put it as the first step of a flow:
//!
//! ```ini
//! [SecureGreeting]
//! ?SecureGreeting?Push
//! ?SecureGreeting?authorize     ; Iam.authorize
//! ?SecureGreeting?greet
//! ??done
//! ```
//!
//! `authorize` lets the request through when the **service that pushed
//! it** — the node's `service` field, which with security on is the one
//! bound to the key the request came in on, never a field of the payload
//! — may perform its action: the flow's name, or the request's `action`
//! field. It answers the request's map, every field passed through, with
//! `user` set to that service id (a `user` the payload brought is
//! replaced), so the next steps get the request they would have got and
//! know who asked. A service the [`POLICY`] does not allow gets an
//! [`ErrorKind::Failed`](zmanager_sdk::ErrorKind::Failed) error whose message
//! starts with `forbidden:`, and the flow stops there.
//!
//! The policy is built in: this is an example of the shape of an IAM
//! component (a real one would read its policy from a store). It is linked
//! into the `zmanager` binary and registers itself ([`zmanager_sdk::register!`]);
//! nothing in `core` names it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zmanager_sdk::{ActionError, Context};

/// Who may do what: a service id and the actions (flow names, or the
/// `action` field of the request) it may perform; `*` is every action.
pub const POLICY: &[(&str, &[&str])] = &[
    ("admin", &["*"]),
    ("ada", &["SecureGreeting", "Greeting", "Echo"]),
    ("guest", &["Echo"]),
];

/// The Iam component (`Iam.authorize`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Iam;

/// The `authorize` request, and its response.
#[derive(Debug, Deserialize, Serialize)]
struct Access {
    /// On the response: the service authorized. On the request, ignored.
    #[serde(default, skip_deserializing)]
    user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    action: Option<String>,
    /// Every other field, passed through to the next step.
    #[serde(flatten)]
    rest: BTreeMap<String, rmpv::Value>,
}

/// True when `service` may perform `action`.
pub fn allowed(service: &str, action: &str) -> bool {
    POLICY
        .iter()
        .filter(|(who, _)| *who == service)
        .flat_map(|(_, actions)| actions.iter())
        .any(|&a| a == "*" || a == action)
}

fn authorize(mut access: Access, context: &Context<'_>) -> Result<Access, ActionError> {
    // A `user` the payload brought is not the one who asked.
    access.rest.remove("user");
    let action = access.action.as_deref().unwrap_or(context.flow);
    if allowed(context.service, action) {
        context.service.clone_into(&mut access.user);
        Ok(access)
    } else {
        Err(ActionError::failed(format!(
            "forbidden: service {:?} may not {action:?}",
            context.service
        )))
    }
}

zmanager_sdk::component! {
    Iam as "Iam" {
        "authorize" => authorize,
    }
}

zmanager_sdk::register!(Iam);

#[cfg(test)]
mod tests {
    use zmanager_sdk::{Component, ErrorKind, Request, respond};

    use super::*;

    fn call_as(service: &str, flow: &str, payload: &[u8]) -> Result<rmpv::Value, ActionError> {
        let request = Request {
            payload,
            context: Context {
                message_id: "m1",
                flow,
                key: "??authorize",
                service,
                attempt: 1,
            },
        };
        let response = Iam.call("authorize", &request)?;
        Ok(rmp_serde::from_slice(&response).unwrap())
    }

    fn map(pairs: &[(&str, &str)]) -> Vec<u8> {
        let map: BTreeMap<&str, &str> = pairs.iter().copied().collect();
        respond(&map).unwrap()
    }

    #[test]
    fn an_allowed_service_passes_with_every_field_and_its_id_as_user() {
        let response = call_as(
            "ada",
            "SecureGreeting",
            &map(&[("name", "  ada "), ("lang", "en")]),
        );
        assert_eq!(
            response.unwrap().to_string(),
            r#"{"user": "ada", "lang": "en", "name": "  ada "}"#
        );
        assert!(call_as("guest", "Other", &map(&[("action", "Echo")])).is_ok());
        assert!(call_as("admin", "Anything", &map(&[])).is_ok());
    }

    #[test]
    fn the_payload_cannot_say_who_asked() {
        // mallory claims to be ada: refused, and ada's name is not used.
        let error = call_as("mallory", "SecureGreeting", &map(&[("user", "ada")])).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Failed);
        assert_eq!(
            error.message,
            "forbidden: service \"mallory\" may not \"SecureGreeting\""
        );
        // ada claiming to be admin is still ada.
        let response = call_as("ada", "Echo", &map(&[("user", "admin")])).unwrap();
        assert_eq!(response.to_string(), r#"{"user": "ada"}"#);
        assert!(
            call_as(
                "ada",
                "Echo",
                &map(&[("user", "admin"), ("action", "delete")])
            )
            .is_err()
        );
    }

    #[test]
    fn a_service_without_the_right_is_forbidden() {
        for (service, flow, request) in [
            ("guest", "SecureGreeting", map(&[])),
            ("mallory", "SecureGreeting", map(&[])),
            ("", "Echo", map(&[])),
            ("ada", "Echo", map(&[("action", "delete")])),
        ] {
            let error = call_as(service, flow, &request).unwrap_err();
            assert_eq!(error.kind, ErrorKind::Failed);
            assert!(error.message.starts_with("forbidden: service"), "{error}");
        }
    }

    #[test]
    fn a_request_that_is_not_a_map_is_a_bad_request() {
        for request in [respond(&"ada").unwrap(), vec![0xc1]] {
            let error = call_as("ada", "Echo", &request).unwrap_err();
            assert_eq!(error.kind, ErrorKind::BadRequest, "{error}");
        }
    }

    #[test]
    fn it_registers_itself() {
        let names: Vec<&str> = zmanager_sdk::linked::linked()
            .map(|l| l.make().name())
            .collect();
        assert!(names.contains(&"Iam"), "{names:?}");
        assert_eq!(Iam.actions(), ["authorize"]);
    }
}
