//! The Text component: string clean-up over any MessagePack value.
//!
//! - `trim` trims the whitespace at both ends of every string;
//! - `upper` upper-cases every string.
//!
//! Both walk the payload recursively: strings inside arrays and map values
//! are changed, map keys are left untouched, and every other value (numbers,
//! booleans, nil, binary, extensions) passes through as it was. So the
//! quickstart flow (`flows/greeting.ini`) can trim `{"name": "  ada "}`
//! without Text knowing its shape. Action mappings name the actions as
//! `Text.trim` and `Text.upper`.
//!
//! A payload that is not exactly one MessagePack value, that nests arrays and
//! maps deeper than [`MAX_DEPTH`], or that holds a string (even a map key)
//! that is not valid UTF-8, is a bad request.

use rmpv::{Utf8String, Value};
use zmanager_sdk::{ActionError, Component, Request};

pub use zmanager_sdk::MAX_DEPTH;

/// The Text component (`Text.trim`, `Text.upper`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Text;

impl Component for Text {
    fn name(&self) -> &'static str {
        "Text"
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn actions(&self) -> &'static [&'static str] {
        &["trim", "upper"]
    }

    fn call(&self, action: &str, request: &Request<'_>) -> Result<Vec<u8>, ActionError> {
        let edit: fn(&str) -> String = match action {
            "trim" => trim,
            "upper" => str::to_uppercase,
            other => return Err(ActionError::unknown_action(self.name(), other)),
        };
        let mut value = decode_value(request.payload)?;
        edit_strings(&mut value, Some(edit))?;
        encode(&value, request.payload.len())
    }
}

zmanager_sdk::register!(Text);

fn trim(text: &str) -> String {
    text.trim().to_owned()
}

/// Decodes exactly one MessagePack value (see [`zmanager_sdk::decode_value`]).
fn decode_value(payload: &[u8]) -> Result<Value, ActionError> {
    zmanager_sdk::decode_value(payload)
        .map_err(|e| ActionError::bad_request(format!("payload does not decode: {e}")))
}

fn encode(value: &Value, size_hint: usize) -> Result<Vec<u8>, ActionError> {
    let mut out = Vec::with_capacity(size_hint);
    rmpv::encode::write_value(&mut out, value)
        .map_err(|e| ActionError::failed(format!("response does not encode: {e}")))?;
    Ok(out)
}

/// Applies `edit` to every string in `value` except map keys, which are only
/// checked: the encoder would write a key that is not UTF-8 back as binary,
/// so such a payload is refused rather than silently changed.
fn edit_strings(value: &mut Value, edit: Option<fn(&str) -> String>) -> Result<(), ActionError> {
    match value {
        Value::String(string) => {
            let Some(text) = string.as_str() else {
                return Err(ActionError::bad_request("a string is not valid UTF-8"));
            };
            if let Some(edit) = edit {
                let edited = edit(text);
                *string = Utf8String::from(edited);
            }
        }
        Value::Array(items) => {
            for item in items {
                edit_strings(item, edit)?;
            }
        }
        Value::Map(entries) => {
            for (key, item) in entries {
                edit_strings(key, None)?;
                edit_strings(item, edit)?;
            }
        }
        Value::Nil
        | Value::Boolean(_)
        | Value::Integer(_)
        | Value::F32(_)
        | Value::F64(_)
        | Value::Binary(_)
        | Value::Ext(..) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;
    use zmanager_sdk::{ErrorKind, respond};

    use super::*;

    fn call(action: &str, payload: &[u8]) -> Result<Value, ActionError> {
        let response = Text.call(action, &Request::new(payload))?;
        Ok(rmpv::decode::read_value(&mut &response[..]).unwrap())
    }

    fn to_bytes(value: &Value) -> Vec<u8> {
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, value).unwrap();
        bytes
    }

    #[derive(Serialize)]
    struct Person<'a> {
        name: &'a str,
        age: u32,
    }

    #[test]
    fn trim_trims_a_struct_field() {
        let payload = respond(&Person {
            name: "  ada \n",
            age: 36,
        })
        .unwrap();
        let response = Text.call("trim", &Request::new(&payload)).unwrap();
        let expected = respond(&Person {
            name: "ada",
            age: 36,
        })
        .unwrap();
        assert_eq!(response, expected);
    }

    #[test]
    fn trim_and_upper_a_plain_string() {
        let payload = rmp_serde::to_vec_named(" héllo wörld\t").unwrap();
        assert_eq!(call("trim", &payload).unwrap(), Value::from("héllo wörld"));
        assert_eq!(
            call("upper", &payload).unwrap(),
            Value::from(" HÉLLO WÖRLD\t")
        );
        let payload = respond("straße").unwrap();
        assert_eq!(call("upper", &payload).unwrap(), Value::from("STRASSE"));
    }

    fn nested(name: &str, tag: &str, deep: &str) -> Value {
        Value::Map(vec![
            (Value::from(" name "), Value::from(name)),
            (
                Value::from("tags"),
                Value::Array(vec![
                    Value::from(tag),
                    Value::from(7),
                    Value::from(-1.5),
                    Value::Boolean(true),
                    Value::Nil,
                    Value::Binary(b" raw ".to_vec()),
                    Value::Ext(3, b" ext ".to_vec()),
                ]),
            ),
            (
                Value::from(1),
                Value::Map(vec![(
                    Value::from(" deep "),
                    Value::Array(vec![Value::from(deep)]),
                )]),
            ),
        ])
    }

    #[test]
    fn trim_walks_arrays_and_map_values_but_not_keys() {
        let payload = to_bytes(&nested("  ada ", " x ", "\t deep \n"));
        assert_eq!(call("trim", &payload).unwrap(), nested("ada", "x", "deep"));
    }

    #[test]
    fn upper_walks_arrays_and_map_values_but_not_keys() {
        let payload = to_bytes(&nested("  ada ", " x ", "deep"));
        assert_eq!(
            call("upper", &payload).unwrap(),
            nested("  ADA ", " X ", "DEEP")
        );
    }

    #[test]
    fn non_string_scalars_pass_through() {
        for value in [
            Value::Nil,
            Value::from(false),
            Value::from(u64::MAX),
            Value::from(i64::MIN),
            Value::F32(0.5),
            Value::F64(2.25),
            Value::Binary(vec![b' ', 0xff]),
            Value::Ext(-1, vec![1, 2]),
            Value::Array(vec![]),
            Value::Map(vec![]),
        ] {
            let payload = to_bytes(&value);
            for action in Text.actions() {
                let response = Text.call(action, &Request::new(&payload)).unwrap();
                assert_eq!(response, payload, "{action} {value}");
            }
        }
    }

    #[test]
    fn a_payload_that_does_not_decode_is_a_bad_request() {
        let mut trailing = respond(&BTreeMap::from([("name", "ada")])).unwrap();
        trailing.push(0xc0);
        let payloads = [
            vec![],
            vec![0xc1],                         // reserved marker
            vec![0xa5, b'a', b'd'],             // a 5-byte string cut short
            vec![0x92, 0xa1, b'x'],             // an array of 2 with 1 element
            vec![0xdd, 0xff, 0xff, 0xff, 0xff], // a huge array with no elements
            vec![0x91; 100_000],                // nested deeper than the decoder allows
            trailing,
        ];
        for payload in payloads {
            for action in Text.actions() {
                let error = call(action, &payload).unwrap_err();
                assert_eq!(error.kind, ErrorKind::BadRequest, "{action}: {error}");
                assert!(
                    error.message.starts_with("payload does not decode"),
                    "{error}"
                );
            }
        }
    }

    #[test]
    fn a_string_that_is_not_utf8_is_a_bad_request() {
        // {"name": <str of 0xff 0xfe>}
        let payload = [0x81, 0xa4, b'n', b'a', b'm', b'e', 0xa2, 0xff, 0xfe];
        for action in Text.actions() {
            let error = call(action, &payload).unwrap_err();
            assert_eq!(
                error,
                ActionError::bad_request("a string is not valid UTF-8")
            );
        }
        // In a key too: it would come back re-encoded as binary.
        let payload = [0x81, 0xa2, 0xff, 0xfe, 0xa3, b' ', b'a', b' '];
        for action in Text.actions() {
            let error = call(action, &payload).unwrap_err();
            assert_eq!(
                error,
                ActionError::bad_request("a string is not valid UTF-8")
            );
        }
    }

    #[test]
    fn a_payload_nested_up_to_the_limit_is_edited() {
        let depth = MAX_DEPTH - 1;
        let payload = [vec![0x91; depth], vec![0xa3, b' ', b'a', b' ']].concat();
        let response = Text.call("upper", &Request::new(&payload)).unwrap();
        assert_eq!(
            response,
            [vec![0x91; depth], vec![0xa3, b' ', b'A', b' ']].concat()
        );
    }

    #[test]
    fn an_unknown_action_is_reported() {
        let payload = respond("ada").unwrap();
        let error = Text.call("lower", &Request::new(&payload)).unwrap_err();
        assert_eq!(error.kind, ErrorKind::UnknownAction);
        assert!(error.message.contains("lower"), "{error}");
        assert_eq!(Text.name(), "Text");
    }
}
