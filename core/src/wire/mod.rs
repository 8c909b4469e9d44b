//! Frame layouts on the node's sockets.
//!
//! - Services → Subject (PUSH → PULL) and Integration Manager → services
//!   (PUB → SUB): `[topic, envelope, payload]`.
//! - Subject ⇄ workers (ROUTER ⇄ DEALER): `[command, ...]`, where the command
//!   is `READY`, `WORK`, `RESULT` or `HEARTBEAT`; `WORK` and `RESULT` carry
//!   one or more `envelope, payload` pairs (a batch). Both sides send
//!   `HEARTBEAT` when they have nothing else to say, so each can tell the
//!   other is gone.
//!
//! Decoding separates a message that is *incomplete* (wrong frame count)
//! from one that is *invalid* (a frame that does not decode).
//!
//! What services share with the node — the envelope, error codes, a
//! [`Message`] and the `[topic, envelope, payload]` frames — is defined
//! once, in the client crate ([`zmanager_client::wire`]), and re-exported
//! here under the paths the node has always used; the frames to and from
//! workers, the payload check and trace contexts are the node's own.

pub mod catalogs;
pub mod payload;
pub mod trace_context;

pub use zmanager_client::wire::{
    MESSAGE_OVERHEAD, Message, WireError, decode_topic_frames, envelope, error_code, topic_frames,
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use zeromq::ZmqMessage;

/// `READY`: a worker announces itself, how many messages it takes at
/// once, and the digests of the catalogs it has loaded ([`catalogs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    pub credits: u32,
    pub pid: u32,
    #[serde(default)]
    pub catalogs: Vec<String>,
}

/// What a worker sends to the Subject.
#[derive(Debug)]
pub enum FromWorker {
    Ready(Ready),
    Results(Vec<Message>),
    /// The catalog versions it can run ([`catalogs`]).
    Serves(catalogs::Serves),
    Heartbeat,
}

/// What the Subject sends to a worker.
#[derive(Debug)]
pub enum ToWorker {
    /// A batch; items that do not decode are errors in place.
    Work(Vec<Result<Message, WireError>>),
    /// A catalog version ([`catalogs`]).
    Catalog(Box<catalogs::Offer>),
    Heartbeat,
}

const READY: &[u8] = b"READY";
const WORK: &[u8] = b"WORK";
const RESULT: &[u8] = b"RESULT";
const HEARTBEAT: &[u8] = b"HEARTBEAT";

/// `[HEARTBEAT]`.
pub fn heartbeat() -> ZmqMessage {
    ZmqMessage::from(Bytes::from_static(HEARTBEAT))
}

/// The frames as a message, without copying them: a `ZmqMessage` is a
/// `VecDeque` and takes the vector's buffer (and spare capacity) as is.
fn frames_to_message(frames: Vec<Bytes>) -> ZmqMessage {
    // A ZmqMessage cannot be empty; every caller passes at least one frame.
    ZmqMessage::try_from(frames).unwrap_or_else(|_| ZmqMessage::from(Bytes::new()))
}

/// `[topic, envelope, payload]`, as services send and the IM publishes.
pub fn topic_message(topic: &str, message: &Message) -> ZmqMessage {
    publication(Bytes::copy_from_slice(topic.as_bytes()), message)
}

/// [`topic_message`] with a topic already owned (not copied).
pub fn publication(topic: impl Into<Bytes>, message: &Message) -> ZmqMessage {
    frames_to_message(topic_frames(topic, message))
}

/// Decodes `[topic, envelope, payload]`; returns the topic and the message.
pub fn decode_topic_message(frames: &ZmqMessage) -> Result<(Bytes, Message), WireError> {
    decode_topic_frames(frames.iter())
}

/// `[READY, {credits, pid, catalogs}]`.
pub fn ready(ready: &Ready) -> ZmqMessage {
    let body = rmp_serde::to_vec_named(&ready).unwrap_or_default();
    frames_to_message(vec![Bytes::from_static(READY), Bytes::from(body)])
}

/// `[WORK, envelope, payload, ...]`.
pub fn work<'a>(batch: impl IntoIterator<Item = &'a Message>) -> ZmqMessage {
    batch_message(WORK, batch)
}

/// `[RESULT, envelope, payload, ...]`.
pub fn results<'a>(batch: impl IntoIterator<Item = &'a Message>) -> ZmqMessage {
    batch_message(RESULT, batch)
}

fn batch_message<'a>(
    command: &'static [u8],
    batch: impl IntoIterator<Item = &'a Message>,
) -> ZmqMessage {
    let batch = batch.into_iter();
    // Room for the pairs, and for the identity frame the Subject puts in
    // front (a push_front into a full VecDeque would reallocate).
    let mut frames = Vec::with_capacity(2 + 2 * batch.size_hint().0);
    frames.push(Bytes::from_static(command));
    for m in batch {
        frames.push(Bytes::from(m.envelope.encode()));
        frames.push(m.payload.clone());
    }
    frames_to_message(frames)
}

/// Decodes the pairs of a `WORK` or `RESULT` batch: `len` frames, read
/// with `frame`, the command first. Pairs that do not decode are returned
/// as errors in place, so the others are still served.
fn decode_batch<'a>(
    len: usize,
    frame: impl Fn(usize) -> Option<&'a Bytes>,
) -> Result<Vec<Result<Message, WireError>>, WireError> {
    let pairs = len.saturating_sub(1);
    if pairs == 0 || !pairs.is_multiple_of(2) {
        return Err(WireError::Incomplete {
            expected: "a command and one or more envelope, payload pairs",
            got: len,
        });
    }
    Ok((1..len)
        .step_by(2)
        .filter_map(|i| Some(Message::decode_pair(frame(i)?, frame(i + 1)?)))
        .collect())
}

/// Decodes what the Subject sent to a worker.
pub fn decode_to_worker(frames: &ZmqMessage) -> Result<ToWorker, WireError> {
    match frames.get(0).map(|f| f.as_ref()) {
        Some(WORK) => decode_batch(frames.len(), |i| frames.get(i)).map(ToWorker::Work),
        Some(HEARTBEAT) => Ok(ToWorker::Heartbeat),
        Some(catalogs::CATALOG) => {
            body(frames.get(1), "CATALOG").map(|offer| ToWorker::Catalog(Box::new(offer)))
        }
        other => Err(unknown(other)),
    }
}

/// Decodes what a worker sent, without the ROUTER's identity frame.
/// A `RESULT` pair that does not decode is dropped with its error returned
/// beside the good ones.
pub fn decode_from_worker(frames: &[Bytes]) -> Result<(FromWorker, Vec<WireError>), WireError> {
    match frames.first().map(|f| f.as_ref()) {
        Some(READY) => {
            let body = frames.get(1).ok_or(WireError::Incomplete {
                expected: "2 (READY, body)",
                got: frames.len(),
            })?;
            let ready = zmanager_sdk::decode(body).map_err(WireError::InvalidReady)?;
            Ok((FromWorker::Ready(ready), Vec::new()))
        }
        Some(HEARTBEAT) => Ok((FromWorker::Heartbeat, Vec::new())),
        Some(catalogs::SERVES) => {
            body(frames.get(1), "SERVES").map(|serves| (FromWorker::Serves(serves), Vec::new()))
        }
        Some(RESULT) => {
            let mut good = Vec::new();
            let mut bad = Vec::new();
            for item in decode_batch(frames.len(), |i| frames.get(i))? {
                match item {
                    Ok(m) => good.push(m),
                    Err(e) => bad.push(e),
                }
            }
            Ok((FromWorker::Results(good), bad))
        }
        other => Err(unknown(other)),
    }
}

/// The body frame of a two-frame command.
fn body<T: serde::de::DeserializeOwned>(
    frame: Option<&Bytes>,
    command: &'static str,
) -> Result<T, WireError> {
    let frame = frame.ok_or(WireError::Incomplete {
        expected: "2 (command, body)",
        got: 1,
    })?;
    zmanager_sdk::decode(frame).map_err(|e| WireError::InvalidBody(command, e))
}

fn unknown(command: Option<&[u8]>) -> WireError {
    WireError::UnknownCommand(String::from_utf8_lossy(command.unwrap_or_default()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::envelope::Envelope;

    fn message(id: &str) -> Message {
        Message::new(Envelope::request(id, "F"), Bytes::from_static(b"\x91\x01"))
    }

    #[test]
    fn topic_messages_round_trip() {
        let m = message("a");
        let frames = topic_message("F~~~~done", &m);
        let (topic, decoded) = decode_topic_message(&frames).unwrap();
        assert_eq!(topic.as_ref(), b"F~~~~done");
        assert_eq!(decoded, m);
    }

    #[test]
    fn incomplete_and_invalid_are_distinct() {
        let two = frames_to_message(vec![Bytes::from_static(b"t"), Bytes::from_static(b"e")]);
        assert!(matches!(
            decode_topic_message(&two),
            Err(WireError::Incomplete { got: 2, .. })
        ));
        let bad = frames_to_message(vec![
            Bytes::from_static(b"t"),
            Bytes::from_static(b"\xc1"),
            Bytes::new(),
        ]);
        assert!(matches!(
            decode_topic_message(&bad),
            Err(WireError::Invalid { .. })
        ));
    }

    #[test]
    fn batches_round_trip_and_keep_good_pairs() {
        let batch = [message("a"), message("b")];
        let work_frames = work(&batch);
        let ToWorker::Work(items) = decode_to_worker(&work_frames).unwrap() else {
            panic!("not work")
        };
        let decoded: Vec<Message> = items.into_iter().map(Result::unwrap).collect();
        assert_eq!(decoded, batch);
        assert!(matches!(
            decode_to_worker(&heartbeat()),
            Ok(ToWorker::Heartbeat)
        ));
        let frames: Vec<Bytes> = heartbeat().iter().cloned().collect();
        assert!(matches!(
            decode_from_worker(&frames),
            Ok((FromWorker::Heartbeat, _))
        ));

        let mut frames: Vec<Bytes> = results(&batch).iter().cloned().collect();
        frames[1] = Bytes::from_static(b"\xc1");
        let (from, bad) = decode_from_worker(&frames).unwrap();
        let FromWorker::Results(good) = from else {
            panic!("not results")
        };
        assert_eq!((good.len(), bad.len()), (1, 1));
        assert_eq!(good[0].envelope.id, "b");
    }

    #[test]
    fn ready_round_trips_and_garbage_is_refused() {
        let frames: Vec<Bytes> = ready(&Ready {
            credits: 64,
            pid: 7,
            catalogs: vec!["ab".into()],
        })
        .iter()
        .cloned()
        .collect();
        let (FromWorker::Ready(r), _) = decode_from_worker(&frames).unwrap() else {
            panic!("not ready")
        };
        assert_eq!(
            r,
            Ready {
                credits: 64,
                pid: 7,
                catalogs: vec!["ab".into()],
            }
        );
        assert!(matches!(
            decode_from_worker(&[Bytes::from_static(b"HELLO")]),
            Err(WireError::UnknownCommand(c)) if c == "HELLO"
        ));
        assert!(matches!(
            decode_from_worker(&[Bytes::from_static(b"RESULT"), Bytes::new()]),
            Err(WireError::Incomplete { .. })
        ));
        assert!(decode_from_worker(&[]).is_err());
    }
}
