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
//! `authorize` takes a map with a `user` and, optionally, an `action` (the
//! flow's name when absent) and answers the same map, every other field
//! passed through, so the next step gets the request it would have got. A
//! user the [`POLICY`] does not allow gets an
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

/// Who may do what: a user and the actions (flow names, or the `action`
/// field of the request) it may perform; `*` is every action.
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
    user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    action: Option<String>,
    /// Every other field, passed through to the next step.
    #[serde(flatten)]
    rest: BTreeMap<String, rmpv::Value>,
}

/// True when `user` may perform `action`.
pub fn allowed(user: &str, action: &str) -> bool {
    POLICY
        .iter()
        .filter(|(who, _)| *who == user)
        .flat_map(|(_, actions)| actions.iter())
        .any(|&a| a == "*" || a == action)
}

fn authorize(access: Access, context: &Context<'_>) -> Result<Access, ActionError> {
    let action = access.action.as_deref().unwrap_or(context.flow);
    if allowed(&access.user, action) {
        Ok(access)
    } else {
        Err(ActionError::failed(format!(
            "forbidden: user {:?} may not {action:?}",
            access.user
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

    fn call(flow: &str, payload: &impl Serialize) -> Result<rmpv::Value, ActionError> {
        let payload = respond(payload).unwrap();
        let request = Request {
            payload: &payload,
            context: Context {
                message_id: "m1",
                flow,
                key: "??authorize",
                service: "s",
                attempt: 1,
            },
        };
        let response = Iam.call("authorize", &request)?;
        Ok(rmp_serde::from_slice(&response).unwrap())
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn an_allowed_user_passes_with_every_field() {
        let request = map(&[("user", "ada"), ("name", "  ada "), ("lang", "en")]);
        let response = call("SecureGreeting", &request).unwrap();
        assert_eq!(
            response.to_string(),
            r#"{"user": "ada", "lang": "en", "name": "  ada "}"#
        );
        let request = map(&[("user", "guest"), ("action", "Echo")]);
        assert!(call("Other", &request).is_ok());
        assert!(call("Anything", &map(&[("user", "admin")])).is_ok());
    }

    #[test]
    fn a_user_without_the_right_is_forbidden() {
        for (flow, request) in [
            ("SecureGreeting", map(&[("user", "guest")])),
            ("SecureGreeting", map(&[("user", "mallory")])),
            ("Echo", map(&[("user", "ada"), ("action", "delete")])),
        ] {
            let error = call(flow, &request).unwrap_err();
            assert_eq!(error.kind, ErrorKind::Failed);
            assert!(error.message.starts_with("forbidden: user"), "{error}");
        }
    }

    #[test]
    fn a_request_without_a_user_is_a_bad_request() {
        for request in [respond(&map(&[("name", "ada")])).unwrap(), vec![0xc1]] {
            let error = Iam
                .call(
                    "authorize",
                    &Request {
                        payload: &request,
                        context: Context {
                            message_id: "m1",
                            flow: "F",
                            key: "??authorize",
                            service: "s",
                            attempt: 1,
                        },
                    },
                )
                .unwrap_err();
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
