//! `Envelope::decode` on arbitrary bytes, and the salvage of a reply
//! address from a broken one.
//!
//! Invariants (a violation panics, so libFuzzer keeps the input):
//! - whatever decodes re-encodes to bytes that decode to an equal envelope,
//!   and encoding that again gives the same bytes;
//! - `encode` writes exactly rmp-serde's `to_vec_named` bytes (as its doc
//!   says);
//! - the direct decoder and serde agree: `Envelope::decode` accepts what
//!   serde (`zmanager_sdk::decode`) accepts, and gives the same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zmanager::wire::envelope::{Envelope, ReplyAddress};

fuzz_target!(|data: &[u8]| {
    let _ = ReplyAddress::salvage(data);
    let decoded = Envelope::decode(data);
    let by_serde = zmanager_sdk::decode::<Envelope>(data);
    match (&decoded, &by_serde) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "direct decoder and serde disagree"),
        (Err(_), Err(_)) => {}
        (Ok(a), Err(e)) => panic!("decode accepted what serde refuses ({e}): {a:?}"),
        (Err(e), Ok(b)) => panic!("decode refused what serde accepts ({e}): {b:?}"),
    }
    let Ok(envelope) = decoded else { return };
    let bytes = envelope.encode();
    let named = rmp_serde::to_vec_named(&envelope).expect("serde encodes an envelope");
    assert_eq!(bytes, named, "encode differs from rmp-serde's to_vec_named");
    let again = Envelope::decode(&bytes).expect("a re-encoded envelope decodes");
    assert_eq!(again, envelope, "decode(encode(e)) != e");
    assert_eq!(again.encode(), bytes, "encoding is not stable");
});
