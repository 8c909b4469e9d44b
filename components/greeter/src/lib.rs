//! The Greeter component: one action, `greet`, that turns a person into a
//! greeting.
//!
//! `greet` takes a map `{"name": string}` and answers
//! `{"greeting": "Hello, <name>!"}`. It is the middle step of the quickstart
//! flow (`flows/greeting.ini`), where `Text.trim` runs before it; Greeter
//! itself does not trim. Action mappings name it as `Greeter.greet`.

use serde::{Deserialize, Serialize};
use zmanager_sdk::ActionError;

/// The Greeter component (`Greeter.greet`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Greeter;

/// The `greet` payload.
#[derive(Deserialize)]
struct Person {
    name: String,
}

/// The `greet` response.
#[derive(Serialize)]
struct Greeting {
    greeting: String,
}

fn greet(person: Person) -> Result<Greeting, ActionError> {
    if person.name.is_empty() {
        return Err(ActionError::bad_request("name is empty"));
    }
    Ok(Greeting {
        greeting: format!("Hello, {}!", person.name),
    })
}

zmanager_sdk::component! {
    Greeter as "Greeter" {
        "greet" => greet,
    }
}

zmanager_sdk::register!(Greeter);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use zmanager_sdk::{Component, ErrorKind, Request, respond};

    use super::*;

    fn greet_map(payload: &[u8]) -> Result<BTreeMap<String, String>, ActionError> {
        Greeter
            .call("greet", &Request::new(payload))
            .map(|response| rmp_serde::from_slice(&response).unwrap())
    }

    #[test]
    fn greet_answers_with_a_greeting() {
        let payload = respond(&BTreeMap::from([("name", "ada")])).unwrap();
        let response = greet_map(&payload).unwrap();
        assert_eq!(
            response,
            BTreeMap::from([("greeting".to_owned(), "Hello, ada!".to_owned())])
        );
    }

    #[test]
    fn greet_ignores_other_fields_and_does_not_trim() {
        let payload =
            rmp_serde::to_vec_named(&BTreeMap::from([("name", " ada "), ("x", "y")])).unwrap();
        let response = greet_map(&payload).unwrap();
        assert_eq!(response["greeting"], "Hello,  ada !");
    }

    #[test]
    fn an_empty_name_is_a_bad_request() {
        let payload = respond(&BTreeMap::from([("name", "")])).unwrap();
        let error = greet_map(&payload).unwrap_err();
        assert_eq!(error, ActionError::bad_request("name is empty"));
    }

    #[test]
    fn a_missing_or_invalid_name_is_a_bad_request() {
        let payloads = [
            respond(&BTreeMap::<String, String>::new()).unwrap(),
            respond(&BTreeMap::from([("nom", "ada")])).unwrap(),
            respond(&BTreeMap::from([("name", 42)])).unwrap(),
            respond(&BTreeMap::from([("name", ())])).unwrap(),
            respond("ada").unwrap(),
            vec![0xc1],
            vec![],
        ];
        for payload in payloads {
            let error = greet_map(&payload).unwrap_err();
            assert_eq!(error.kind, ErrorKind::BadRequest, "{payload:x?}: {error}");
        }
    }

    #[test]
    fn an_unknown_action_is_reported() {
        let payload = respond(&BTreeMap::from([("name", "ada")])).unwrap();
        let error = Greeter.call("wave", &Request::new(&payload)).unwrap_err();
        assert_eq!(error.kind, ErrorKind::UnknownAction);
        assert!(error.message.contains("wave"), "{error}");
        assert_eq!(Greeter.name(), "Greeter");
        assert_eq!(Greeter.actions(), &["greet"]);
    }
}
