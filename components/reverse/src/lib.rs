//! The Reverse component, built as a shared library that a node loads at
//! run time: the example of `docs/components.md`.
//!
//! - `reverse`: `{"text": "hello"}` → `{"text": "olleh"}`
//! - `count`: `{"text": "hello world"}` → `{"chars": 11, "words": 2}`

use serde::{Deserialize, Serialize};
use zmanager_sdk::ActionError;

#[derive(Debug, Default)]
pub struct Reverse;

#[derive(Debug, Deserialize, Serialize)]
pub struct Text {
    pub text: String,
}

#[derive(Debug, Serialize)]
pub struct Counts {
    pub chars: usize,
    pub words: usize,
}

fn reverse(input: Text) -> Result<Text, ActionError> {
    if input.text.is_empty() {
        return Err(ActionError::bad_request("text is empty"));
    }
    Ok(Text {
        text: input.text.chars().rev().collect(),
    })
}

fn count(input: Text) -> Result<Counts, ActionError> {
    Ok(Counts {
        chars: input.text.chars().count(),
        words: input.text.split_whitespace().count(),
    })
}

zmanager_sdk::component! {
    Reverse as "Reverse" {
        "reverse" => reverse,
        "count" => count,
    }
}

zmanager_sdk::export_component!(Reverse);

#[cfg(test)]
mod tests {
    use zmanager_sdk::{Component, ErrorKind, Request, decode, respond};

    use super::*;

    #[test]
    fn reverse_reverses_and_refuses_empty_text() {
        let call = |text: &str| {
            let payload = respond(&Text { text: text.into() }).unwrap();
            Reverse.call("reverse", &Request::new(&payload))
        };
        let response = call("hello").unwrap();
        assert_eq!(decode::<Text>(&response).unwrap().text, "olleh");
        assert_eq!(call("").unwrap_err().kind, ErrorKind::BadRequest);
    }
}
