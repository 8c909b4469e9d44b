//! What the fuzz targets share: reading structured input out of the bytes
//! libFuzzer gives. `make_corpus.py` writes seeds in the same layout.

/// Reads fuzz input front to back. Nothing here fails: past the end every
/// read is empty or zero, so any input is some valid layout.
#[derive(Debug)]
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    /// One byte (0 past the end).
    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    /// A length-prefixed chunk: a byte below 0x80 is the length; a byte
    /// `0x80 | hi` and the next byte `lo` give the length `hi << 8 | lo`
    /// (up to 32767). Cut short at the end of the input.
    pub fn chunk(&mut self) -> &'a [u8] {
        let first = self.byte();
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            usize::from(first & 0x7f) << 8 | usize::from(self.byte())
        };
        let len = len.min(self.rest.len());
        let (chunk, rest) = self.rest.split_at(len);
        self.rest = rest;
        chunk
    }

    /// Everything not read yet.
    pub fn rest(self) -> &'a [u8] {
        self.rest
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// `text` as a string: lossily, so that non-UTF-8 input still reaches the
/// parsers (the node reads files with `read_to_string`, which refuses such
/// files before they get there, but a replacement character is as good a
/// test as any other).
pub fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

use zmanager::Diagnostics;
use zmanager::catalog::action_key::ActionKey;
use zmanager::catalog::flow::Flow;
use zmanager::catalog::mapping::{Mapping, MappingTable};
use zmanager::retry::PolicyEntry;
use zmanager::catalog::topic::Topic;

/// Every key a loader returns prints as text that parses back to it.
pub fn check_key(key: &ActionKey) {
    let text = key.to_string();
    assert_eq!(
        ActionKey::parse(&text).as_ref(),
        Ok(key),
        "action key {text:?} does not parse back to itself"
    );
}

/// Prints every diagnostic (locations are computed from offsets into the
/// text: a wrong one would panic here).
pub fn print(diagnostics: &Diagnostics) {
    let _ = diagnostics.to_string();
    for d in diagnostics.iter() {
        let _ = d.to_string();
    }
}

/// Uses loaded flows the way the node does: keys, topics, step lookups.
pub fn use_flows(flows: &[Flow], diagnostics: &Diagnostics) {
    print(diagnostics);
    for flow in flows {
        let _ = flow.location.to_string();
        if let Some(order_by) = &flow.order_by {
            let _ = order_by.to_string();
        }
        for (i, step) in flow.steps.iter().enumerate() {
            check_key(&step.key);
            assert!(
                flow.position(&step.key).is_some_and(|p| p <= i),
                "step {i} of {} is not found by its own key",
                flow.name
            );
            let _ = flow.next_step(&step.key);
            let topic = Topic::new(&flow.name, &step.key);
            if !diagnostics.has_errors() {
                // A valid flow's topics read back as written (subscribers
                // are told them as text).
                assert_eq!(
                    Topic::parse(&topic.to_string()).as_ref(),
                    Ok(&topic),
                    "topic of a valid flow does not parse back"
                );
            }
        }
    }
}

/// Puts loaded mappings in a table and resolves every key, as the catalog
/// does; computes every retry delay a policy gives.
pub fn use_mappings(
    mappings: Vec<Mapping>,
    policies: &[PolicyEntry],
    diagnostics: &mut Diagnostics,
) {
    let mut table = MappingTable::default();
    let keys: Vec<ActionKey> = mappings.iter().map(|m| m.key.clone()).collect();
    for m in mappings {
        check_key(&m.key);
        table.insert(m, diagnostics);
    }
    for key in &keys {
        // `??` (every field empty) is never looked up: `resolve` skips the
        // all-wildcard form.
        if key.sender().is_empty() && key.context_is_empty() && key.action().is_empty() {
            continue;
        }
        let found = table.resolve(key).map(|r| &r.mapping.key);
        assert_eq!(
            found,
            Some(key),
            "mapped key {key} does not resolve to itself"
        );
    }
    let _ = table.iter().count();
    for entry in policies {
        check_key(&entry.key);
        let p = &entry.policy;
        for attempt in [
            0,
            1,
            2,
            3,
            p.max_attempts.saturating_sub(1),
            p.max_attempts,
            u32::MAX,
        ] {
            for spread in [0.0, 0.5, 0.999, 1.0] {
                let delay = p.delay(attempt, spread);
                assert!(delay <= p.max_delay, "delay {delay:?} over max_delay");
            }
        }
        let _ = p.retries("failed");
    }
    print(diagnostics);
}
