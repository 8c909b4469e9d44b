//! `Envelope::decode` on arbitrary bytes, and the salvage of a reply
//! address from a broken one.
//!
//! Invariants (a violation panics, so libFuzzer keeps the input):
//! - whatever decodes re-encodes to bytes that decode to an equal envelope,
//!   and encoding that again gives the same bytes;
//! - `encode` writes exactly rmp-serde's `to_vec_named` bytes (as its doc
//!   says);
//! - the direct decoder and serde agree: `Envelope::decode` accepts what
//!   serde (`zmanager_sdk::decode`) accepts, and gives the same envelope;
//! - the trace context (`traceparent`, `tracestate`): a `traceparent` that
//!   parses prints back as one that parses the same; after the Subject's
//!   intake rules (`trace_context::adopt` for a request, `drop_malformed`
//!   for the rest) the envelope has a valid `traceparent` (or, not a
//!   request, none), a `tracestate` of at most 512 characters only beside
//!   one, and applying the rule again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zmanager::wire::envelope::{Envelope, ReplyAddress};
use zmanager::wire::trace_context::{self, Adopted, TRACESTATE_MAX, TraceParent};

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
    trace_context_rules(envelope);
});

fn trace_context_rules(envelope: Envelope) {
    if let Some(parent) = TraceParent::parse(&envelope.traceparent) {
        let printed = parent.to_string();
        assert_eq!(TraceParent::parse(&printed), Some(parent), "{printed}");
    }
    // Off (the default): kept when valid, gone otherwise.
    let mut without = envelope.clone();
    let adopted = trace_context::adopt(&mut without, false);
    if TraceParent::parse(&envelope.traceparent).is_some() {
        assert_eq!(adopted, Adopted::Kept);
    } else {
        assert_eq!(adopted, Adopted::Without);
        assert!(without.traceparent.is_empty() && without.tracestate.is_empty());
    }
    let mut request = envelope.clone();
    let adopted = trace_context::adopt(&mut request, true);
    let kept = TraceParent::parse(&envelope.traceparent).is_some();
    assert_eq!(adopted == Adopted::Kept, kept, "{envelope:?}");
    let parent = TraceParent::parse(&request.traceparent);
    assert!(parent.is_some(), "adopt left {:?}", request.traceparent);
    if kept {
        assert_eq!(parent, TraceParent::parse(&envelope.traceparent));
    } else {
        assert!(request.tracestate.is_empty(), "{request:?}");
    }
    assert!(request.tracestate.len() <= TRACESTATE_MAX);
    let settled = request.clone();
    assert_eq!(trace_context::adopt(&mut request, true), Adopted::Kept);
    assert_eq!(request, settled, "adopt is not idempotent");

    let mut other = envelope;
    trace_context::drop_malformed(&mut other);
    assert!(other.traceparent.is_empty() || TraceParent::parse(&other.traceparent).is_some());
    assert!(other.tracestate.is_empty() || !other.traceparent.is_empty());
    assert!(!trace_context::drop_malformed(&mut other), "drop_malformed is not idempotent");
}
