//! The wire protocol a service and a node share (`docs/protocol.md`).
//!
//! - [`envelope`]: the MessagePack map every message carries, and what can
//!   be salvaged from one that does not decode.
//! - [`error_code`]: the stable numbers of error results.
//! - [`topic`]: topics (`flow~decorator~sender~context~action`) and a
//!   service's reply topic (`@reply~<id>~`).
//! - Here: a [`Message`] (envelope and payload), and the frames services
//!   and the node's publisher exchange, `[topic, envelope, payload]`
//!   ([`topic_frames`], [`decode_topic_frames`]).
//!
//! Decoding separates a message that is *incomplete* (wrong frame count)
//! from one that is *invalid* (a frame that does not decode).
//!
//! The node (`zmanager::wire`) re-exports all of this under its own paths,
//! and adds what only it speaks: the frames between the Subject and its
//! workers, the payload check, trace contexts.

pub mod envelope;
pub mod error_code;
pub mod topic;

/// Decodes MessagePack nested at most [`MAX_DEPTH`] deep: what every value
/// from the network goes through (a payload, say: `wire::decode(&reply.payload)`).
pub use zmanager_sdk::{MAX_DEPTH, decode};

use bytes::Bytes;

use crate::wire::envelope::{Envelope, ReplyAddress};

/// A message: its envelope and its payload bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub envelope: Envelope,
    pub payload: Bytes,
}

/// What [`Message::size`] counts for a message besides its strings and
/// payload: the envelope's other fields and the structures that hold it.
pub const MESSAGE_OVERHEAD: usize = 128;

/// The largest frame a node's worker may send, a result's payload: so also
/// the largest a service takes from the node's publisher.
pub const RESULT_FRAME_BYTES: usize = 64 << 20;

/// Why frames are not a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("expected {expected} frames, got {got}")]
    Incomplete { expected: &'static str, got: usize },
    #[error("the envelope frame does not decode: {source}")]
    Invalid {
        /// What could be read of the sender's address, to answer it.
        address: Box<ReplyAddress>,
        #[source]
        source: rmp_serde::decode::Error,
    },
    /// A frame between the node and its workers starts with no command
    /// they know (the node's own sockets only).
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// A worker's `READY` does not decode (the node's own sockets only).
    #[error("the READY frame does not decode: {0}")]
    InvalidReady(#[source] rmp_serde::decode::Error),
    /// The body of another command between the node and its workers does
    /// not decode (`CATALOG`, `SERVES`; the node's own sockets only).
    #[error("the {0} frame does not decode: {1}")]
    InvalidBody(&'static str, #[source] rmp_serde::decode::Error),
}

impl Message {
    pub fn new(envelope: Envelope, payload: Bytes) -> Self {
        Self { envelope, payload }
    }

    /// The bytes the node holds for this message: its payload, the strings
    /// of its envelope, and a fixed allowance for the rest (what bounds in
    /// bytes count).
    pub fn size(&self) -> usize {
        let e = &self.envelope;
        self.payload.len()
            + e.id.len()
            + e.flow.len()
            + e.key.len()
            + e.service.len()
            + e.reply_to.len()
            + e.origin.len()
            + e.order_key.len()
            + e.traceparent.len()
            + e.tracestate.len()
            + e.error
                .as_ref()
                .map_or(0, |x| x.name.len() + x.message.len())
            + MESSAGE_OVERHEAD
    }

    /// Decodes `envelope, payload` frames. An envelope that does not
    /// decode is [`WireError::Invalid`], with what could be read of the
    /// sender's address.
    pub fn decode_pair(envelope: &[u8], payload: &Bytes) -> Result<Self, WireError> {
        match Envelope::decode(envelope) {
            Ok(envelope) => Ok(Self {
                envelope,
                payload: payload.clone(),
            }),
            Err(source) => Err(WireError::Invalid {
                address: Box::new(ReplyAddress::salvage(envelope)),
                source,
            }),
        }
    }
}

/// `[topic, envelope, payload]`, as services send and the node publishes.
pub fn topic_frames(topic: impl Into<Bytes>, message: &Message) -> Vec<Bytes> {
    vec![
        topic.into(),
        Bytes::from(message.envelope.encode()),
        message.payload.clone(),
    ]
}

/// Decodes `[topic, envelope, payload]`; returns the topic and the message.
pub fn decode_topic_frames<'a>(
    frames: impl IntoIterator<Item = &'a Bytes>,
) -> Result<(Bytes, Message), WireError> {
    let mut frames = frames.into_iter();
    let first = [frames.next(), frames.next(), frames.next()];
    let more = frames.count();
    match first {
        [Some(topic), Some(envelope), Some(payload)] if more == 0 => {
            Ok((topic.clone(), Message::decode_pair(envelope, payload)?))
        }
        _ => Err(WireError::Incomplete {
            expected: "3 (topic, envelope, payload)",
            got: first.iter().flatten().count() + more,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::envelope::Kind;
    use crate::wire::error_code::ErrorCode;

    fn message(id: &str) -> Message {
        Message::new(Envelope::request(id, "F"), Bytes::from_static(b"\x91\x01"))
    }

    #[test]
    fn topic_frames_round_trip() {
        let m = message("a");
        let frames = topic_frames("F~~~~done", &m);
        let (topic, decoded) = decode_topic_frames(&frames).unwrap();
        assert_eq!(topic.as_ref(), b"F~~~~done");
        assert_eq!(decoded, m);
    }

    /// What a service sends and what it gets back keep every field it set:
    /// a request with its ack, order key and operator; an error result.
    #[test]
    fn requests_and_error_results_round_trip_through_frames() {
        let mut request = Envelope::request("svc-1-0", "Greeting");
        request.service = "svc-1".into();
        request.reply_to = topic::reply_topic("svc-1");
        request.key = "?Greeting?trim".into();
        request.order_key = "acct-7".into();
        request.ack = true;
        request.created_us = 1_700_000_000_000_000;
        let m = Message::new(request, Bytes::from_static(&[0xc0]));
        let (_, back) = decode_topic_frames(&topic_frames("Greeting~~~~", &m)).unwrap();
        assert_eq!(back, m);

        let mut result = m
            .envelope
            .clone()
            .into_error(ErrorCode::UnknownFlow, "no such flow");
        result.kind = Kind::Result;
        let m = Message::new(result, Bytes::from_static(&[0xc0]));
        let (topic, back) = decode_topic_frames(&topic_frames("@reply~svc-1~", &m)).unwrap();
        assert_eq!(topic.as_ref(), b"@reply~svc-1~");
        let error = back.envelope.error.as_ref().expect("an error");
        assert_eq!(
            (error.code, error.message.as_str()),
            (ErrorCode::UnknownFlow, "no such flow")
        );
        assert_eq!(back, m);
    }

    #[test]
    fn incomplete_and_invalid_are_distinct() {
        let two = [Bytes::from_static(b"t"), Bytes::from_static(b"e")];
        assert!(matches!(
            decode_topic_frames(&two),
            Err(WireError::Incomplete { got: 2, .. })
        ));
        let four = vec![Bytes::new(); 4];
        assert!(matches!(
            decode_topic_frames(&four),
            Err(WireError::Incomplete { got: 4, .. })
        ));
        let bad = [
            Bytes::from_static(b"t"),
            Bytes::from_static(b"\xc1"),
            Bytes::new(),
        ];
        assert!(matches!(
            decode_topic_frames(&bad),
            Err(WireError::Invalid { .. })
        ));
    }

    /// An envelope that does not decode as a whole still gives the address
    /// to answer, when its map has one.
    #[test]
    fn an_invalid_envelope_keeps_what_can_be_read_of_its_address() {
        #[derive(serde::Serialize)]
        struct Broken<'a> {
            id: &'a str,
            reply_to: &'a str,
            attempt: i64,
        }
        let envelope = rmp_serde::to_vec_named(&Broken {
            id: "x-1",
            reply_to: "@reply~x~",
            attempt: -1,
        })
        .unwrap();
        let frames = [
            Bytes::from_static(b"t"),
            Bytes::from(envelope),
            Bytes::from_static(&[0xc0]),
        ];
        let Err(WireError::Invalid { address, .. }) = decode_topic_frames(&frames) else {
            panic!("not invalid")
        };
        assert_eq!(address.id, "x-1");
        assert_eq!(address.reply_to, "@reply~x~");
    }

    #[test]
    fn the_size_counts_strings_and_payload() {
        let m = message("abc");
        assert_eq!(m.size(), 2 + 3 + 1 + MESSAGE_OVERHEAD);
    }
}
