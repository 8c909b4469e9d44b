//! The envelope: the MessagePack map that travels with every message.
//!
//! Every message on every socket is frames `[.., envelope, payload]`: the
//! envelope says what the message is and where it is in its flow; the
//! payload is the application's MessagePack value, passed between hops as
//! bytes without being decoded. `docs/protocol.md` is the reference for
//! clients in other languages.

use serde::{Deserialize, Serialize};

use crate::wire::error_code::ErrorCode;

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
    /// The node's acknowledgement that it took a request (sent only when
    /// the request asked for it with `ack`): with the journal on, the
    /// request is recorded on disk and survives a crash of the node.
    Accepted,
    /// A service's instance taking the steps flows give its service
    /// (`[services]`): its payload is how many it takes at once, its
    /// `reply_to` the topic it takes them on. Sent again every so often,
    /// it is the instance's heartbeat; 0 stops it.
    Take,
    /// A step the node gives to a service, on the topic its instance took
    /// it on; the service answers it as an `@ASYNC` step (a `result` with
    /// `origin` and `id`).
    Step,
    /// A subscriber's durable subscription: its payload `{name, prefixes,
    /// window}`, its `reply_to` the topic deliveries go to
    /// (`docs/durable.md`).
    Subscribe,
    /// A durable subscriber acknowledges what it got: `{name, seq}`.
    Ack,
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
    /// On a request: the service wants a `kind` `accepted` message on its
    /// `reply_to` once the node has taken (and journaled) the request.
    /// False, and left out on the wire, everywhere else.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ack: bool,
    /// The key an ordered flow orders this request by (`docs/ordering.md`):
    /// set by the service when its flow is ordered by `envelope`; written
    /// by the Subject (the payload field's value) when it is ordered by a
    /// payload field; cleared in flows that are not ordered. Empty, and
    /// left out on the wire, when there is none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub order_key: String,
    /// On a request from the node's own tools (`zmanager dlq replay`,
    /// `journal replay`): the node's operator cookie (`zmanager::security::operator`),
    /// which lets the request name any step of its flow. The Subject takes
    /// it off at intake; empty, and left out on the wire, everywhere else.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operator: String,
    /// The W3C Trace Context `traceparent` of the request
    /// (`00-<trace-id>-<parent-id>-<flags>`, `zmanager::wire::trace_context`):
    /// set by the service, or by the Subject at intake when the request
    /// carries none that is valid; every message of the request's flow
    /// carries it. Empty, and left out on the wire, when there is none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub traceparent: String,
    /// The W3C Trace Context `tracestate` that goes with `traceparent`
    /// (vendors' `key=value` list), kept as given up to
    /// `zmanager::wire::trace_context::TRACESTATE_MAX` (512) characters. Empty, and
    /// left out on the wire, when there is none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tracestate: String,
    #[serde(default)]
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// The version of the node's catalog (flows and mappings) the request
    /// runs on (`docs/reload.md`): set by the Subject when it accepts the
    /// request, whatever a service wrote there, and kept by every message
    /// of its flow and its result. 0, and left out on the wire, before.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub catalog: u32,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn protocol_version() -> u8 {
    PROTOCOL_VERSION
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_false(b: &bool) -> bool {
    !*b
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
            ack: false,
            order_key: String::new(),
            operator: String::new(),
            traceparent: String::new(),
            tracestate: String::new(),
            status: Status::Ok,
            error: None,
            catalog: 0,
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
    ///
    /// The bytes are exactly those of rmp-serde's `to_vec_named` (a test
    /// checks it), written directly into a buffer sized once: this runs
    /// several times per request, and serde's writer costs about twice as
    /// much (`docs/performance.md`).
    pub fn encode(&self) -> Vec<u8> {
        let strings = self.id.len()
            + self.flow.len()
            + self.key.len()
            + self.service.len()
            + self.reply_to.len()
            + self.origin.len()
            + self.order_key.len()
            + self.operator.len()
            + self.traceparent.len()
            + self.tracestate.len();
        let mut out = Vec::with_capacity(strings + codec::FIXED_MAX);
        codec::encode(self, &mut out);
        out
    }

    /// Decodes an envelope (nesting limited, see [`zmanager_sdk::decode`]).
    ///
    /// An envelope in the form this node and its clients write — a map of
    /// known keys with string and unsigned integer values, no `error` — is
    /// read directly; anything else goes through serde, which has the final
    /// word on what is accepted. Both give the same envelope (a property
    /// test checks it).
    pub fn decode(bytes: &[u8]) -> Result<Self, rmp_serde::decode::Error> {
        if let Some(envelope) = codec::decode(bytes) {
            return Ok(envelope);
        }
        zmanager_sdk::decode(bytes)
    }
}

/// The envelope's MessagePack codec without serde, for the common case.
mod codec {
    use super::{Envelope, Kind, Status};

    fn kind_name(kind: Kind) -> &'static str {
        match kind {
            Kind::Request => "request",
            Kind::Result => "result",
            Kind::Ping => "ping",
            Kind::Accepted => "accepted",
            Kind::Take => "take",
            Kind::Step => "step",
            Kind::Subscribe => "subscribe",
            Kind::Ack => "ack",
            Kind::Unknown => "unknown",
        }
    }

    fn status_name(status: Status) -> &'static str {
        match status {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Unknown => "unknown",
        }
    }

    // The marker choices are rmp's (`rmp::encode::write_uint`, `write_str`):
    // the smallest form that holds the value.
    fn uint(out: &mut Vec<u8>, v: u64) {
        if v < 0x80 {
            out.push(v as u8);
        } else if let Ok(v) = u8::try_from(v) {
            out.extend([0xcc, v]);
        } else if let Ok(v) = u16::try_from(v) {
            out.push(0xcd);
            out.extend(v.to_be_bytes());
        } else if let Ok(v) = u32::try_from(v) {
            out.push(0xce);
            out.extend(v.to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend(v.to_be_bytes());
        }
    }

    fn str(out: &mut Vec<u8>, s: &str) {
        let n = s.len();
        if n < 32 {
            out.push(0xa0 | n as u8);
        } else if let Ok(n) = u8::try_from(n) {
            out.extend([0xd9, n]);
        } else if let Ok(n) = u16::try_from(n) {
            out.push(0xda);
            out.extend(n.to_be_bytes());
        } else {
            out.push(0xdb);
            out.extend(u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
        }
        out.extend_from_slice(s.as_bytes());
    }

    /// The most bytes [`encode`] writes besides the string fields' bytes
    /// and the `error` map: every key (140 bytes), a map16 header (3), a
    /// header of at most 5 bytes for each of the ten string fields, the
    /// longest `kind` and `status` names, integers at their widest (a test
    /// checks that an envelope with all of these fits).
    pub(super) const FIXED_MAX: usize = 253;

    /// Appends `e` as rmp-serde's `to_vec_named` would write it: a map of
    /// the fields in declaration order, `error` only when present.
    pub(super) fn encode(e: &Envelope, out: &mut Vec<u8>) {
        let entries = 12
            + u8::from(!e.origin.is_empty())
            + u8::from(e.ack)
            + u8::from(!e.order_key.is_empty())
            + u8::from(!e.operator.is_empty())
            + u8::from(!e.traceparent.is_empty())
            + u8::from(!e.tracestate.is_empty())
            + u8::from(e.error.is_some())
            + u8::from(e.catalog != 0);
        // Up to 15 entries fit a fixmap; more take a map16 (rmp writes the
        // smallest form).
        if entries < 16 {
            out.push(0x80 | entries);
        } else {
            out.extend([0xde, 0, entries]);
        }
        str(out, "v");
        uint(out, u64::from(e.v));
        str(out, "kind");
        str(out, kind_name(e.kind));
        str(out, "id");
        str(out, &e.id);
        str(out, "flow");
        str(out, &e.flow);
        str(out, "step");
        uint(out, u64::from(e.step));
        str(out, "key");
        str(out, &e.key);
        str(out, "service");
        str(out, &e.service);
        str(out, "reply_to");
        str(out, &e.reply_to);
        str(out, "attempt");
        uint(out, u64::from(e.attempt));
        str(out, "created_us");
        uint(out, e.created_us);
        str(out, "accepted_us");
        uint(out, e.accepted_us);
        if !e.origin.is_empty() {
            str(out, "origin");
            str(out, &e.origin);
        }
        if e.ack {
            str(out, "ack");
            out.push(0xc3);
        }
        if !e.order_key.is_empty() {
            str(out, "order_key");
            str(out, &e.order_key);
        }
        if !e.operator.is_empty() {
            str(out, "operator");
            str(out, &e.operator);
        }
        if !e.traceparent.is_empty() {
            str(out, "traceparent");
            str(out, &e.traceparent);
        }
        if !e.tracestate.is_empty() {
            str(out, "tracestate");
            str(out, &e.tracestate);
        }
        str(out, "status");
        str(out, status_name(e.status));
        if let Some(error) = &e.error {
            str(out, "error");
            // Error results are rare: serde writes the nested map. Writing
            // strings and integers into a Vec cannot fail.
            let _ = rmp_serde::encode::write_named(out, error);
        }
        if e.catalog != 0 {
            str(out, "catalog");
            uint(out, u64::from(e.catalog));
        }
    }

    struct Reader<'a> {
        bytes: &'a [u8],
    }

    impl<'a> Reader<'a> {
        fn byte(&mut self) -> Option<u8> {
            let (&b, rest) = self.bytes.split_first()?;
            self.bytes = rest;
            Some(b)
        }

        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.bytes.len() < n {
                return None;
            }
            let (taken, rest) = self.bytes.split_at(n);
            self.bytes = rest;
            Some(taken)
        }

        fn be(&mut self, n: usize) -> Option<u64> {
            Some(
                self.take(n)?
                    .iter()
                    .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
            )
        }

        fn map_len(&mut self) -> Option<u64> {
            match self.byte()? {
                m @ 0x80..=0x8f => Some(u64::from(m & 0x0f)),
                0xde => self.be(2),
                0xdf => self.be(4),
                _ => None,
            }
        }

        fn str(&mut self) -> Option<&'a str> {
            let n = match self.byte()? {
                m @ 0xa0..=0xbf => u64::from(m & 0x1f),
                0xd9 => self.be(1)?,
                0xda => self.be(2)?,
                0xdb => self.be(4)?,
                _ => return None,
            };
            std::str::from_utf8(self.take(usize::try_from(n).ok()?)?).ok()
        }

        fn uint(&mut self) -> Option<u64> {
            match self.byte()? {
                m @ 0x00..=0x7f => Some(u64::from(m)),
                0xcc => self.be(1),
                0xcd => self.be(2),
                0xce => self.be(4),
                0xcf => self.be(8),
                _ => None,
            }
        }
    }

    /// Reads a map of known keys with `str` and unsigned integer values,
    /// each key at most once, `id` present, nothing after the map; `None`
    /// for anything else (serde then decides).
    pub(super) fn decode(bytes: &[u8]) -> Option<Envelope> {
        let mut r = Reader { bytes };
        let entries = r.map_len()?;
        // Nineteen known keys, each at most once.
        if entries > 19 {
            return None;
        }
        let mut e = Envelope::request(String::new(), String::new());
        let mut seen = 0u32;
        for _ in 0..entries {
            let key = r.str()?;
            let field = match key {
                "v" => 0,
                "kind" => 1,
                "id" => 2,
                "flow" => 3,
                "step" => 4,
                "key" => 5,
                "service" => 6,
                "reply_to" => 7,
                "attempt" => 8,
                "created_us" => 9,
                "accepted_us" => 10,
                "status" => 11,
                "origin" => 12,
                "ack" => 13,
                "order_key" => 14,
                "operator" => 15,
                "traceparent" => 16,
                "tracestate" => 17,
                "catalog" => 18,
                _ => return None,
            };
            if seen & (1 << field) != 0 {
                return None;
            }
            seen |= 1 << field;
            match field {
                0 => e.v = u8::try_from(r.uint()?).ok()?,
                1 => {
                    e.kind = match r.str()? {
                        "request" => Kind::Request,
                        "result" => Kind::Result,
                        "ping" => Kind::Ping,
                        "accepted" => Kind::Accepted,
                        "take" => Kind::Take,
                        "step" => Kind::Step,
                        "subscribe" => Kind::Subscribe,
                        "ack" => Kind::Ack,
                        _ => Kind::Unknown,
                    }
                }
                2 => r.str()?.clone_into(&mut e.id),
                3 => r.str()?.clone_into(&mut e.flow),
                4 => e.step = u32::try_from(r.uint()?).ok()?,
                5 => r.str()?.clone_into(&mut e.key),
                6 => r.str()?.clone_into(&mut e.service),
                7 => r.str()?.clone_into(&mut e.reply_to),
                8 => e.attempt = u32::try_from(r.uint()?).ok()?,
                9 => e.created_us = r.uint()?,
                10 => e.accepted_us = r.uint()?,
                12 => r.str()?.clone_into(&mut e.origin),
                13 => {
                    e.ack = match r.byte()? {
                        0xc2 => false,
                        0xc3 => true,
                        _ => return None,
                    }
                }
                14 => r.str()?.clone_into(&mut e.order_key),
                15 => r.str()?.clone_into(&mut e.operator),
                16 => r.str()?.clone_into(&mut e.traceparent),
                17 => r.str()?.clone_into(&mut e.tracestate),
                18 => e.catalog = u32::try_from(r.uint()?).ok()?,
                _ => {
                    e.status = match r.str()? {
                        "ok" => Status::Ok,
                        "error" => Status::Error,
                        _ => Status::Unknown,
                    }
                }
            }
        }
        if seen & (1 << 2) == 0 || !r.bytes.is_empty() {
            return None;
        }
        Some(e)
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

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn keys(bytes: &[u8]) -> Vec<String> {
        let value: rmpv::Value = rmp_serde::from_slice(bytes).unwrap();
        let map = value.as_map().unwrap();
        map.iter()
            .map(|(k, _)| k.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_trace_context_round_trips_and_is_absent_when_empty() {
        let mut e = Envelope::request("m1", "Echo");
        assert!(
            !keys(&e.encode())
                .iter()
                .any(|k| k == "traceparent" || k == "tracestate"),
            "absent when empty"
        );
        e.traceparent = TRACEPARENT.into();
        e.tracestate = "congo=t61rcWkgMzE".into();
        let bytes = e.encode();
        assert_eq!(bytes, rmp_serde::to_vec_named(&e).unwrap(), "serde's bytes");
        assert_eq!(Envelope::decode(&bytes).unwrap(), e);
        assert_eq!(codec::decode(&bytes), Some(e.clone()), "read directly");
        let keys = keys(&bytes);
        let at = |name: &str| keys.iter().position(|k| k == name).unwrap();
        // In the table's order: after `operator`'s place, before `status`.
        assert!(at("accepted_us") < at("traceparent"));
        assert!(at("traceparent") + 1 == at("tracestate"));
        assert!(at("tracestate") + 1 == at("status"));
        // Each without the other.
        e.tracestate.clear();
        assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
        (e.traceparent, e.tracestate) = (String::new(), "a=1".into());
        assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
    }

    /// `encode` sizes its buffer once: every key at once, with the widest
    /// integers and headers, fits in it.
    #[test]
    fn the_largest_envelope_fits_the_buffer_encode_sizes() {
        let long = "x".repeat(70_000);
        let mut e = Envelope::request(long.clone(), long.clone());
        e.v = u8::MAX;
        e.kind = Kind::Subscribe;
        e.step = u32::MAX;
        (e.key, e.service, e.reply_to) = (long.clone(), long.clone(), long.clone());
        e.attempt = u32::MAX;
        (e.created_us, e.accepted_us) = (u64::MAX, u64::MAX);
        (e.origin, e.ack, e.order_key) = (long.clone(), true, long.clone());
        (e.operator, e.traceparent, e.tracestate) = (long.clone(), long.clone(), long);
        e.status = Status::Unknown;
        e.catalog = u32::MAX;
        let bytes = e.encode();
        assert_eq!(bytes, rmp_serde::to_vec_named(&e).unwrap());
        assert!(
            bytes.len() <= bytes.capacity() && bytes.capacity() == 10 * 70_000 + codec::FIXED_MAX,
            "{} bytes in a buffer of {}",
            bytes.len(),
            bytes.capacity()
        );
        assert!(
            bytes.len() > 10 * 70_000 + codec::FIXED_MAX - 8,
            "the bound is tight"
        );
    }

    mod codec_matches_serde {
        use super::*;
        use proptest::prelude::*;

        fn serde_bytes(e: &Envelope) -> Vec<u8> {
            rmp_serde::to_vec_named(e).unwrap()
        }

        const KINDS: [Kind; 9] = [
            Kind::Request,
            Kind::Result,
            Kind::Ping,
            Kind::Accepted,
            Kind::Take,
            Kind::Step,
            Kind::Subscribe,
            Kind::Ack,
            Kind::Unknown,
        ];
        const STATUSES: [Status; 3] = [Status::Ok, Status::Error, Status::Unknown];

        fn envelope() -> impl Strategy<Value = Envelope> {
            let text = prop_oneof![
                "[a-z~@?0-9-]{0,40}",
                ".{0,3}",
                (0usize..3).prop_map(|i| "x".repeat([255, 256, 65_536][i])),
            ];
            (
                (
                    any::<u8>(),
                    0usize..5,
                    text.clone(),
                    text.clone(),
                    any::<u32>(),
                ),
                (text.clone(), text.clone(), text.clone(), any::<u32>()),
                (
                    any::<u64>(),
                    any::<u64>(),
                    0usize..3,
                    any::<bool>(),
                    text.clone(),
                    any::<bool>(),
                    text.clone(),
                    text.clone(),
                ),
                (
                    prop_oneof![
                        Just(String::new()),
                        Just("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
                        text.clone(),
                    ],
                    text,
                    any::<u32>(),
                ),
            )
                .prop_map(
                    |(
                        (v, kind, id, flow, step),
                        (key, service, reply_to, attempt),
                        (created_us, accepted_us, status, error, origin, ack, order_key, operator),
                        (traceparent, tracestate, catalog),
                    )| {
                        let mut e = Envelope {
                            v,
                            kind: KINDS[kind],
                            id,
                            flow,
                            step,
                            key,
                            service,
                            reply_to,
                            attempt,
                            created_us,
                            accepted_us,
                            origin,
                            ack,
                            order_key,
                            operator,
                            traceparent,
                            tracestate,
                            status: STATUSES[status],
                            error: None,
                            catalog,
                        };
                        if error {
                            e = e.into_error(ErrorCode::Other(7000), "boom");
                            e.status = STATUSES[status];
                        }
                        e
                    },
                )
        }

        /// One field value in one of the forms MessagePack allows, canonical
        /// or not, of the right type or not.
        fn raw_value() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                (0u8..0x80).prop_map(|v| vec![v]),
                any::<u8>().prop_map(|v| vec![0xcc, v]),
                any::<u16>().prop_map(|v| [&[0xcd][..], &v.to_be_bytes()].concat()),
                any::<u32>().prop_map(|v| [&[0xce][..], &v.to_be_bytes()].concat()),
                prop_oneof![Just(0u64), Just(5), Just(300), any::<u64>()].prop_map(|v| [
                    &[0xcf][..],
                    &v.to_be_bytes()
                ]
                .concat()),
                (0xe0u8..=0xff).prop_map(|v| vec![v]),
                any::<i8>().prop_map(|v| vec![0xd0, v as u8]),
                Just(vec![0xc0]),
                Just(vec![0xc3]),
                prop_oneof![
                    Just("request"),
                    Just("result"),
                    Just("ping"),
                    Just("ok"),
                    Just("error"),
                    Just("unknown"),
                    Just("x")
                ]
                .prop_map(|s| [&[0xa0 | s.len() as u8][..], s.as_bytes()].concat()),
                "[a-z]{0,5}".prop_map(|s| [&[0xd9, s.len() as u8][..], s.as_bytes()].concat()),
                "[a-z]{0,5}".prop_map(|s| [&[0xda, 0, s.len() as u8][..], s.as_bytes()].concat()),
                "[a-z]{0,5}".prop_map(|s| [&[0xc4, s.len() as u8][..], s.as_bytes()].concat()),
                Just(vec![0xa2, 0xff, 0xfe]),
                Just(vec![0x91, 0x01]),
                Just(vec![0x81, 0xa1, b'a', 0x01]),
                proptest::collection::vec(any::<u8>(), 0..3),
            ]
        }

        const FIELDS: [(&str, bool); 16] = [
            ("v", true),
            ("kind", false),
            ("id", false),
            ("flow", false),
            ("step", true),
            ("key", false),
            ("service", false),
            ("reply_to", false),
            ("attempt", true),
            ("created_us", true),
            ("accepted_us", true),
            ("order_key", false),
            ("operator", false),
            ("traceparent", false),
            ("tracestate", false),
            ("status", false),
        ];

        /// A value of the field's type (unsigned integer or string) in any
        /// of its encodings, or (one time in eight) any value at all.
        fn value_for(integer: bool) -> impl Strategy<Value = Vec<u8>> {
            let typed = if integer {
                prop_oneof![
                    (0u8..0x80).prop_map(|v| vec![v]),
                    any::<u8>().prop_map(|v| vec![0xcc, v]),
                    any::<u16>().prop_map(|v| [&[0xcd][..], &v.to_be_bytes()].concat()),
                    any::<u32>().prop_map(|v| [&[0xce][..], &v.to_be_bytes()].concat()),
                    any::<u64>().prop_map(|v| [&[0xcf][..], &v.to_be_bytes()].concat()),
                ]
                .boxed()
            } else {
                let text = prop_oneof![
                    Just("request".to_owned()),
                    Just("result".to_owned()),
                    Just("ping".to_owned()),
                    Just("ok".to_owned()),
                    Just("error".to_owned()),
                    Just("unknown".to_owned()),
                    ".{0,6}",
                ];
                (text, 0usize..3)
                    .prop_map(|(t, form)| {
                        let n = t.len();
                        let header = match form {
                            0 if n < 32 => vec![0xa0 | n as u8],
                            0 | 1 => vec![0xd9, n as u8],
                            _ => vec![0xda, 0, n as u8],
                        };
                        [header, t.into_bytes()].concat()
                    })
                    .boxed()
            };
            prop_oneof![7 => typed, 1 => raw_value()]
        }

        /// Envelope-like maps: known keys in any order and subset, values
        /// mostly of the right type; sometimes an unknown or repeated key,
        /// a wrong value, bytes after the map.
        fn raw_map() -> impl Strategy<Value = Vec<u8>> {
            // At most 15 entries with the extra one: the fixmap header
            // below holds up to 15.
            let entries = proptest::sample::subsequence(FIELDS.to_vec(), 0..=14)
                .prop_shuffle()
                .prop_flat_map(|fields| {
                    fields
                        .into_iter()
                        .map(|(k, integer)| (Just(k), any::<bool>(), value_for(integer)))
                        .collect::<Vec<_>>()
                });
            let extra = proptest::option::weighted(
                0.15,
                (
                    prop_oneof![Just("error"), Just("extra"), Just("id"), Just("v")],
                    raw_value(),
                ),
            );
            let trailing =
                proptest::option::weighted(0.1, proptest::collection::vec(any::<u8>(), 1..3));
            (entries, extra, any::<bool>(), trailing).prop_map(
                |(entries, extra, map16, trailing)| {
                    let n = entries.len() + usize::from(extra.is_some());
                    let mut out = if map16 {
                        vec![0xde, 0, n as u8]
                    } else {
                        vec![0x80 | (n as u8 & 0x0f)]
                    };
                    let key = |out: &mut Vec<u8>, k: &str, str8: bool| {
                        if str8 {
                            out.extend([0xd9, k.len() as u8]);
                        } else {
                            out.push(0xa0 | k.len() as u8);
                        }
                        out.extend(k.as_bytes());
                    };
                    for (k, str8, value) in entries {
                        key(&mut out, k, str8);
                        out.extend(value);
                    }
                    if let Some((k, value)) = extra {
                        key(&mut out, k, false);
                        out.extend(value);
                    }
                    out.extend(trailing.unwrap_or_default());
                    out
                },
            )
        }

        #[test]
        fn every_kind_and_status_encodes_as_serde_does() {
            for kind in KINDS {
                for status in STATUSES {
                    let mut e = Envelope::request("a", "F");
                    (e.kind, e.status) = (kind, status);
                    assert_eq!(e.encode(), serde_bytes(&e), "{kind:?} {status:?}");
                    assert_eq!(codec::decode(&e.encode()), Some(e));
                }
            }
        }

        proptest! {
            #[test]
            fn encoding_is_serdes_and_decoding_round_trips(e in envelope()) {
                let bytes = e.encode();
                prop_assert_eq!(&bytes, &serde_bytes(&e));
                prop_assert_eq!(Envelope::decode(&bytes).unwrap(), e.clone());
                if e.error.is_none() {
                    prop_assert_eq!(codec::decode(&bytes), Some(e));
                }
            }

            /// Whatever the direct decoder accepts, serde accepts and reads
            /// the same; what it declines is left to serde.
            #[test]
            fn the_direct_decoder_agrees_with_serde(bytes in raw_map()) {
                if let Some(direct) = codec::decode(&bytes) {
                    let by_serde: Result<Envelope, _> = zmanager_sdk::decode(&bytes);
                    prop_assert_eq!(by_serde.ok(), Some(direct));
                }
            }

            #[test]
            fn corrupted_envelopes_agree_too(e in envelope(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
                let mut bytes = e.encode();
                for (at, b) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] = b;
                }
                if let Some(direct) = codec::decode(&bytes) {
                    let by_serde: Result<Envelope, _> = zmanager_sdk::decode(&bytes);
                    prop_assert_eq!(by_serde.ok(), Some(direct));
                }
            }
        }
    }
}
