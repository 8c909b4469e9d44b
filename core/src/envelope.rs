//! The envelope: the MessagePack map that travels with every message.
//!
//! Every message on every socket is frames `[.., envelope, payload]`: the
//! envelope says what the message is and where it is in its flow; the
//! payload is the application's MessagePack value, passed between hops as
//! bytes without being decoded. `docs/protocol.md` is the reference for
//! clients in other languages.

use serde::{Deserialize, Serialize};

use crate::error_code::ErrorCode;

/// The protocol version this node speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A service's request into a flow, or work in a flow.
    #[default]
    Request,
    /// The outcome of a flow (or of the step where it stopped).
    Result,
    /// A service checking that its subscription is live: the node publishes
    /// it back on its `reply_to` topic, untouched.
    Ping,
    /// A kind this build does not know (from a newer peer); refused.
    #[serde(other)]
    Unknown,
}

/// Whether a result is a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Ok,
    Error,
    /// A status this build does not know (from a newer peer).
    #[serde(other)]
    Unknown,
}

/// The error of an error result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Stable number (see [`ErrorCode`]).
    pub code: ErrorCode,
    /// The code's snake_case name, for humans and logs.
    pub name: String,
    pub message: String,
}

/// The envelope. Fields a client may leave out have defaults; unknown
/// fields are ignored, so newer clients can talk to this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Protocol version ([`PROTOCOL_VERSION`]).
    #[serde(default = "protocol_version")]
    pub v: u8,
    #[serde(default)]
    pub kind: Kind,
    /// Message id, chosen by the service; unique among that service's
    /// requests (ids of different services never collide).
    pub id: String,
    /// The flow the message belongs to.
    #[serde(default)]
    pub flow: String,
    /// Index of the step the message is at (0 is the entry).
    #[serde(default)]
    pub step: u32,
    /// The action key of that step. A request may leave it empty: the flow's
    /// entry step is meant.
    #[serde(default)]
    pub key: String,
    /// The id of the service that pushed the request.
    #[serde(default)]
    pub service: String,
    /// The topic the result is published on; empty means the flow's
    /// results topic, `Flow~~~~done`, which every subscriber of the flow
    /// receives.
    #[serde(default)]
    pub reply_to: String,
    /// Delivery attempt, 1 on first dispatch (set by the Subject).
    #[serde(default)]
    pub attempt: u32,
    /// When the service created the request, microseconds since the Unix
    /// epoch (set by the service; 0 if unknown).
    #[serde(default)]
    pub created_us: u64,
    /// When the Subject accepted it (set by the Subject).
    #[serde(default)]
    pub accepted_us: u64,
    /// On an answer to an `@ASYNC` step (`kind` `result` pushed by a
    /// service): the `service` of the message answered (ids are unique per
    /// service). Empty, and left out on the wire, everywhere else.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    #[serde(default)]
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

fn protocol_version() -> u8 {
    PROTOCOL_VERSION
}

/// The fields needed to answer a message that does not decode as an
/// [`Envelope`]: if they can be read, the sender gets its error result.
#[derive(Debug, Default)]
pub struct ReplyAddress {
    pub id: String,
    pub flow: String,
    pub service: String,
    pub reply_to: String,
}

impl Envelope {
    /// A new request into `flow` (at its entry step).
    pub fn request(id: impl Into<String>, flow: impl Into<String>) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            kind: Kind::Request,
            id: id.into(),
            flow: flow.into(),
            step: 0,
            key: String::new(),
            service: String::new(),
            reply_to: String::new(),
            attempt: 0,
            created_us: 0,
            accepted_us: 0,
            origin: String::new(),
            status: Status::Ok,
            error: None,
        }
    }

    /// Turns this envelope into an error result.
    pub fn into_error(mut self, code: ErrorCode, message: impl Into<String>) -> Self {
        self.kind = Kind::Result;
        self.status = Status::Error;
        self.error = Some(ErrorInfo {
            code,
            name: code.name().to_owned(),
            message: message.into(),
        });
        self
    }

    /// An error result for a message that could not be read as an envelope.
    pub fn error_for(address: ReplyAddress, code: ErrorCode, message: impl Into<String>) -> Self {
        let mut envelope = Self::request(address.id, address.flow);
        envelope.service = address.service;
        envelope.reply_to = address.reply_to;
        envelope.into_error(code, message)
    }

    /// MessagePack map with field names (readable from any language).
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain strings and integers into a Vec cannot fail.
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }

    /// Decodes an envelope (nesting limited, see [`zmanager_sdk::decode`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, rmp_serde::decode::Error> {
        zmanager_sdk::decode(bytes)
    }
}

impl ReplyAddress {
    /// Reads what it can of a broken envelope: each of the four fields that
    /// is a string in a MessagePack map; empty when nothing can be read.
    pub fn salvage(bytes: &[u8]) -> Self {
        let mut address = Self::default();
        let Ok(rmpv::Value::Map(entries)) = zmanager_sdk::decode_value(bytes) else {
            return address;
        };
        for (key, value) in entries {
            let (Some(key), Some(value)) = (key.as_str(), value.as_str()) else {
                continue;
            };
            let field = match key {
                "id" => &mut address.id,
                "flow" => &mut address.flow,
                "service" => &mut address.service,
                "reply_to" => &mut address.reply_to,
                _ => continue,
            };
            value.clone_into(field);
        }
        address
    }

    /// True when an error result can reach the sender, and only the sender:
    /// its `reply_to` could be read (never a flow-wide topic).
    pub fn is_reachable(&self) -> bool {
        !self.reply_to.is_empty()
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_a_named_map() {
        let mut e = Envelope::request("m1", "Greeting");
        e.service = "svc".into();
        e.reply_to = "_reply~svc~".into();
        let bytes = e.encode();
        assert_eq!(Envelope::decode(&bytes).unwrap(), e);
        // A map with string keys, so any language reads it as a dict.
        let value: rmpv::Value = rmp_serde::from_slice(&bytes).unwrap();
        let map = value.as_map().unwrap();
        assert!(
            map.iter()
                .any(|(k, v)| k.as_str() == Some("flow") && v.as_str() == Some("Greeting"))
        );
        assert!(
            map.iter()
                .any(|(k, v)| k.as_str() == Some("kind") && v.as_str() == Some("request"))
        );
        assert!(!map.iter().any(|(k, _)| k.as_str() == Some("error")));
    }

    #[test]
    fn a_minimal_client_envelope_decodes_with_defaults() {
        #[derive(Serialize)]
        struct Minimal {
            id: &'static str,
            flow: &'static str,
            extra: u32,
        }
        let bytes = rmp_serde::to_vec_named(&Minimal {
            id: "x",
            flow: "Echo",
            extra: 7,
        })
        .unwrap();
        let e = Envelope::decode(&bytes).unwrap();
        assert_eq!(
            (e.v, e.kind, e.id.as_str(), e.flow.as_str()),
            (1, Kind::Request, "x", "Echo")
        );
    }

    #[test]
    fn error_results_carry_code_and_name() {
        let e = Envelope::request("m", "F").into_error(ErrorCode::UnknownFlow, "no flow F");
        let decoded = Envelope::decode(&e.encode()).unwrap();
        assert_eq!(decoded.status, Status::Error);
        let info = decoded.error.unwrap();
        assert_eq!(
            (info.code, info.name.as_str()),
            (ErrorCode::UnknownFlow, "unknown_flow")
        );
    }

    #[test]
    fn salvages_the_reply_address_of_a_broken_envelope() {
        #[derive(Serialize)]
        struct Broken {
            id: u32,
            reply_to: &'static str,
        }
        let bytes = rmp_serde::to_vec_named(&Broken {
            id: 5,
            reply_to: "r~",
        })
        .unwrap();
        assert!(Envelope::decode(&bytes).is_err());
        let address = ReplyAddress::salvage(&bytes);
        assert!(address.is_reachable());
        assert_eq!((address.id.as_str(), address.reply_to.as_str()), ("", "r~"));
        assert!(!ReplyAddress::salvage(b"\xc1garbage").is_reachable());
        assert!(!ReplyAddress::salvage(&[]).is_reachable());
    }
}
