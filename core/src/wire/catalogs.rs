//! The catalog's versions between the Subject and its workers
//! (`docs/reload.md`, `docs/protocol.md` §3):
//!
//! - `READY` lists the digests of the catalogs the worker has loaded (its
//!   own, read at start);
//! - `[CATALOG, offer]`, Subject → worker: version `version` is the
//!   catalog of `digest`; its files come with it (`sources`) unless the
//!   worker said it has them;
//! - `[SERVES, {versions, refused}]`, worker → Subject: the versions it
//!   can run now, and the ones it cannot, with why (a component it does
//!   not have).
//!
//! The Subject gives a worker only messages of versions it serves; it
//! sends each offer before any work of that version on the same socket,
//! so a worker never meets a version it was not told of.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use zeromq::ZmqMessage;

use crate::catalog::version::Sources;

pub(super) const CATALOG: &[u8] = b"CATALOG";
pub(super) const SERVES: &[u8] = b"SERVES";

/// A version of the catalog, offered to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub version: u32,
    pub digest: String,
    /// The files, unless the worker listed `digest` at READY.
    #[serde(default)]
    pub sources: Option<Sources>,
}

/// What a worker can run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Serves {
    pub versions: Vec<u32>,
    /// Versions it cannot run, each with why.
    #[serde(default)]
    pub refused: Vec<(u32, String)>,
}

/// `[CATALOG, offer]`.
pub fn offer(offer: &Offer) -> ZmqMessage {
    two(CATALOG, rmp_serde::to_vec_named(offer).unwrap_or_default())
}

/// `[SERVES, serves]`.
pub fn serves(serves: &Serves) -> ZmqMessage {
    two(SERVES, rmp_serde::to_vec_named(serves).unwrap_or_default())
}

fn two(command: &'static [u8], body: Vec<u8>) -> ZmqMessage {
    super::frames_to_message(vec![Bytes::from_static(command), Bytes::from(body)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::source::{Format, SourceFile};
    use crate::wire::{FromWorker, ToWorker, decode_from_worker, decode_to_worker};

    #[test]
    fn offers_and_answers_round_trip() {
        let sent = Offer {
            version: 3,
            digest: "ab".into(),
            sources: Some(Sources {
                flows: vec![SourceFile::new(
                    "f.ini",
                    "[F]\n?F?Push\n??done\n",
                    Format::Ini,
                )],
                mappings: vec![],
            }),
        };
        let ToWorker::Catalog(got) = decode_to_worker(&offer(&sent)).unwrap() else {
            panic!("not an offer")
        };
        assert_eq!(*got, sent);
        let answer = Serves {
            versions: vec![1, 3],
            refused: vec![(2, "no component Pay".into())],
        };
        let frames: Vec<Bytes> = serves(&answer).iter().cloned().collect();
        let (FromWorker::Serves(got), _) = decode_from_worker(&frames).unwrap() else {
            panic!("not serves")
        };
        assert_eq!(got, answer);
        let bad = [Bytes::from_static(SERVES), Bytes::from_static(b"\xc1")];
        assert!(decode_from_worker(&bad).is_err(), "garbage is refused");
    }
}
