//! The payload check, `zmanager::wire::payload::check(bytes, depth)`, and the
//! SDK's `zmanager_sdk::decode_value`, on arbitrary bytes; and the ordering
//! key an ordered flow reads from a payload (`OrderBy::key_of`).
//!
//! The first byte is the depth limit given to `check` (0xff: the node's
//! own, `MAX_DEPTH - 1`; any other byte, that byte mod 64); the rest is the
//! payload.
//!
//! Invariants (`payload.rs`'s own property tests): what `check` passes,
//! `rmpv` reads as exactly one value, nothing left over; and with the
//! intake's limit, `check` passes exactly what `decode_value` decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zmanager::wire::envelope::Envelope;
use zmanager::ordering::OrderBy;
use zmanager::wire::payload;
use zmanager_sdk::MAX_DEPTH;

fuzz_target!(|data: &[u8]| {
    let Some((&depth, bytes)) = data.split_first() else {
        return;
    };
    // Small limits, and the node's own (the intake checks with MAX_DEPTH - 1).
    let depth = match depth {
        0xff => MAX_DEPTH - 1,
        d => usize::from(d % 64),
    };
    let checked = payload::check(bytes, depth);
    if let Err(e) = &checked {
        let _ = (e.to_string(), e.is_incomplete());
    } else {
        let mut rest = bytes;
        rmpv::decode::read_value(&mut rest).expect("what check passes, rmpv reads");
        assert!(
            rest.is_empty(),
            "check passed {} trailing bytes",
            rest.len()
        );
    }
    // The intake's limit (`subject/intake.rs`): the node and the SDK agree.
    assert_eq!(
        payload::check(bytes, MAX_DEPTH - 1).is_ok(),
        zmanager_sdk::decode_value(bytes).is_ok(),
        "the intake's check and the SDK's decoder disagree"
    );

    let envelope = Envelope::request("id", "F");
    for path in ["payload.k", "payload.a.b"] {
        let order_by = OrderBy::parse(path).expect("a valid order_by");
        let _ = order_by.key_of(&envelope, bytes);
    }
});
