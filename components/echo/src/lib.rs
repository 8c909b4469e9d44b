//! The Echo component: one action, `echo`, that returns its payload
//! unchanged.
//!
//! It is the benchmark's trivial action: it does not decode the payload, so
//! what a benchmark measures through it is the framework, not the action.
//! Action mappings name it as `Echo.echo`.

use zmanager_sdk::{ActionError, Component, Request};

/// The Echo component (`Echo.echo`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Component for Echo {
    fn name(&self) -> &'static str {
        "Echo"
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn actions(&self) -> &'static [&'static str] {
        &["echo"]
    }

    fn call(&self, action: &str, request: &Request<'_>) -> Result<Vec<u8>, ActionError> {
        match action {
            // The payload is not decoded: any bytes come back as they were.
            "echo" => Ok(request.payload.to_vec()),
            other => Err(ActionError::unknown_action(self.name(), other)),
        }
    }
}

zmanager_sdk::register!(Echo);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use zmanager_sdk::{ErrorKind, respond};

    use super::*;

    #[test]
    fn echo_returns_the_payload_unchanged() {
        let payload = respond(&BTreeMap::from([("name", "ada"), ("lang", "en")])).unwrap();
        let response = Echo.call("echo", &Request::new(&payload)).unwrap();
        assert_eq!(response, payload);
        let decoded: BTreeMap<String, String> = rmp_serde::from_slice(&response).unwrap();
        assert_eq!(decoded["name"], "ada");
        assert_eq!(decoded["lang"], "en");
    }

    #[test]
    fn echo_does_not_decode_the_payload() {
        // Not MessagePack at all (0xc1 is a reserved marker), and empty.
        for payload in [&[0xc1, 0xff, 0x00][..], &[][..]] {
            assert_eq!(Echo.call("echo", &Request::new(payload)).unwrap(), payload);
        }
    }

    #[test]
    fn every_listed_action_is_known() {
        let payload = respond(&()).unwrap();
        for action in Echo.actions() {
            assert!(
                Echo.call(action, &Request::new(&payload)).is_ok(),
                "{action}"
            );
        }
        assert_eq!(Echo.name(), "Echo");
    }

    #[test]
    fn an_unknown_action_is_reported() {
        let payload = respond(&()).unwrap();
        let error = Echo.call("shout", &Request::new(&payload)).unwrap_err();
        assert_eq!(error.kind, ErrorKind::UnknownAction);
        assert!(error.message.contains("Echo"), "{error}");
        assert!(error.message.contains("shout"), "{error}");
    }
}
