//! A cheap check that a request's payload is exactly one MessagePack value.
//!
//! The node passes payloads between steps as bytes, and only actions
//! decode them. [`check`] lets it refuse, at intake, bytes that no action
//! could read (`docs/protocol.md` §4): anything that is not exactly one
//! complete value — empty, cut short, followed by more bytes, or holding
//! the byte `0xc1` that MessagePack never uses — and values nested deeper
//! than a limit. It reads each marker once with `rmp` and skips over
//! strings, binaries and extensions without looking into them, so it costs
//! a pass over the markers, not a decode:
//!
//! - **no recursion**: open arrays and maps are a stack bounded by
//!   `max_depth`, so a hostile megabyte of `0x91` (an array holding an
//!   array holding …) fails at the limit instead of overflowing the stack;
//! - **no allocation from declared lengths**: a length is compared with the
//!   bytes that are left before anything else, so an array declaring 2³²
//!   elements in 10 bytes fails at once as truncated;
//! - **what is not checked**: that strings are UTF-8, that map keys are
//!   unique, anything about the shape an action expects. Those stay the
//!   actions' to refuse.

use rmp::Marker;
use rmp::decode;

/// Why bytes are not one MessagePack value. Offsets count from the
/// payload's first byte, 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// No bytes at all.
    #[error("the payload is empty: it must be one MessagePack value (nil is the byte 0xc0)")]
    Empty,
    /// The value starting at `offset` needs at least `needed` bytes from
    /// there, and only `left` follow it (its own first byte included).
    #[error(
        "truncated: the {what} at byte {offset} needs at least {needed} bytes, and {left} are left"
    )]
    Truncated {
        /// The MessagePack format, as the specification names it
        /// (`str 8`, `array 32`, `fixmap`…).
        what: &'static str,
        offset: usize,
        needed: u64,
        left: usize,
    },
    /// The byte `0xc1`, which MessagePack never uses, where a value starts.
    #[error("byte {offset} is 0xc1, which MessagePack never uses")]
    Reserved { offset: usize },
    /// An array or map inside `max_depth` others.
    #[error("the {what} at byte {offset} is nested deeper than {max_depth} arrays and maps")]
    TooDeep {
        what: &'static str,
        offset: usize,
        max_depth: usize,
    },
    /// A complete value, then `count` more bytes from `offset` on.
    #[error(
        "{count} bytes after the value, from byte {offset}: a payload is exactly one MessagePack value"
    )]
    Trailing { offset: usize, count: usize },
}

impl PayloadError {
    /// True when more bytes could make the payload valid (empty or cut
    /// short), false when it is invalid whatever follows.
    pub fn is_incomplete(&self) -> bool {
        matches!(self, PayloadError::Empty | PayloadError::Truncated { .. })
    }
}

/// An array or map whose values are still being read.
#[derive(Debug)]
struct Open {
    what: &'static str,
    /// Where it starts.
    offset: usize,
    /// Values it still needs (a map's keys and values both count).
    left: u64,
}

/// What follows a marker.
enum Body {
    /// Nothing more (nil, booleans, fixints) or a fixed number of bytes.
    Fixed(usize),
    /// A length in the next bytes, then that many bytes of data.
    Data,
    /// An extension: a length and a type byte, then the data.
    Ext,
    /// An array or map header: `per_entry` values per entry it declares.
    Open { per_entry: u64 },
}

/// Checks that `bytes` are exactly one MessagePack value with arrays, maps
/// and extensions nested at most `max_depth` deep (a value inside 256
/// arrays passes with 256, inside 257 it does not; an extension inside 256
/// arrays does not either), without recursion and without allocating more
/// than the stack of open arrays and maps.
pub fn check(bytes: &[u8], max_depth: usize) -> Result<(), PayloadError> {
    if bytes.is_empty() {
        return Err(PayloadError::Empty);
    }
    let mut open: Vec<Open> = Vec::new();
    let mut pos = 0;
    loop {
        let Some(&byte) = bytes.get(pos) else {
            // Values declared, none left: the innermost open one is short.
            let innermost = open.last().ok_or(PayloadError::Empty)?;
            return Err(PayloadError::Truncated {
                what: innermost.what,
                offset: innermost.offset,
                needed: (pos - innermost.offset) as u64 + innermost.left,
                left: pos - innermost.offset,
            });
        };
        let start = pos;
        let marker = Marker::from_u8(byte);
        let rest = &bytes[start..];
        let truncated = |needed: u64| PayloadError::Truncated {
            what: name(marker),
            offset: start,
            needed,
            left: rest.len(),
        };
        match body(marker) {
            None => return Err(PayloadError::Reserved { offset: start }),
            Some(Body::Fixed(n)) => {
                if rest.len() <= n {
                    return Err(truncated(1 + n as u64));
                }
                pos += 1 + n;
            }
            Some(body @ (Body::Data | Body::Ext)) => {
                // An extension is a level as an array is (as `rmp_serde`
                // counts it).
                if matches!(body, Body::Ext) && open.len() >= max_depth {
                    return Err(PayloadError::TooDeep {
                        what: name(marker),
                        offset: start,
                        max_depth,
                    });
                }
                let mut reader = rest;
                let len = match marker {
                    Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                        decode::read_str_len(&mut reader)
                            .map_err(|_| truncated(header_len(marker)))?
                    }
                    Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
                        decode::read_bin_len(&mut reader)
                            .map_err(|_| truncated(header_len(marker)))?
                    }
                    _ => {
                        decode::read_ext_meta(&mut reader)
                            .map_err(|_| truncated(header_len(marker)))?
                            .size
                    }
                };
                let header = rest.len() - reader.len();
                if reader.len() < len as usize {
                    return Err(truncated(header as u64 + u64::from(len)));
                }
                pos += header + len as usize;
            }
            Some(Body::Open { per_entry }) => {
                let mut reader = rest;
                let entries = match marker {
                    Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
                        decode::read_array_len(&mut reader)
                    }
                    _ => decode::read_map_len(&mut reader),
                }
                .map_err(|_| truncated(header_len(marker)))?;
                if open.len() >= max_depth {
                    return Err(PayloadError::TooDeep {
                        what: name(marker),
                        offset: start,
                        max_depth,
                    });
                }
                let header = rest.len() - reader.len();
                let values = u64::from(entries) * per_entry;
                // Each value takes a byte at least: fail before counting
                // down a length the bytes cannot hold.
                if values > reader.len() as u64 {
                    return Err(truncated(header as u64 + values));
                }
                pos += header;
                if values > 0 {
                    open.push(Open {
                        what: name(marker),
                        offset: start,
                        left: values,
                    });
                    continue;
                }
            }
        }
        // A value ended: it counts for the array or map around it, which
        // may end with it, and so on outwards.
        while let Some(innermost) = open.last_mut() {
            innermost.left -= 1;
            if innermost.left > 0 {
                break;
            }
            open.pop();
        }
        if open.is_empty() {
            return match bytes.len() - pos {
                0 => Ok(()),
                count => Err(PayloadError::Trailing { offset: pos, count }),
            };
        }
    }
}

/// What follows `marker`; `None` for the reserved `0xc1`.
fn body(marker: Marker) -> Option<Body> {
    Some(match marker {
        Marker::Reserved => return None,
        Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
            Body::Fixed(0)
        }
        Marker::U8 | Marker::I8 => Body::Fixed(1),
        Marker::U16 | Marker::I16 => Body::Fixed(2),
        Marker::U32 | Marker::I32 | Marker::F32 => Body::Fixed(4),
        Marker::U64 | Marker::I64 | Marker::F64 => Body::Fixed(8),
        Marker::FixStr(_)
        | Marker::Str8
        | Marker::Str16
        | Marker::Str32
        | Marker::Bin8
        | Marker::Bin16
        | Marker::Bin32 => Body::Data,
        Marker::FixExt1
        | Marker::FixExt2
        | Marker::FixExt4
        | Marker::FixExt8
        | Marker::FixExt16
        | Marker::Ext8
        | Marker::Ext16
        | Marker::Ext32 => Body::Ext,
        Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => Body::Open { per_entry: 1 },
        Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => Body::Open { per_entry: 2 },
    })
}

/// The bytes of a length-prefixed format's header, marker included (for
/// the error when they are cut short).
fn header_len(marker: Marker) -> u64 {
    match marker {
        Marker::Str8 | Marker::Bin8 => 2,
        Marker::Str16 | Marker::Bin16 | Marker::Array16 | Marker::Map16 => 3,
        Marker::Str32 | Marker::Bin32 | Marker::Array32 | Marker::Map32 => 5,
        // Marker, type.
        Marker::FixExt1
        | Marker::FixExt2
        | Marker::FixExt4
        | Marker::FixExt8
        | Marker::FixExt16 => 2,
        // Marker, length, type.
        Marker::Ext8 => 3,
        Marker::Ext16 => 4,
        Marker::Ext32 => 6,
        _ => 1,
    }
}

/// The format's name in the MessagePack specification.
fn name(marker: Marker) -> &'static str {
    match marker {
        Marker::FixPos(_) => "positive fixint",
        Marker::FixNeg(_) => "negative fixint",
        Marker::Null => "nil",
        Marker::Reserved => "never used (0xc1)",
        Marker::False | Marker::True => "bool",
        Marker::U8 => "uint 8",
        Marker::U16 => "uint 16",
        Marker::U32 => "uint 32",
        Marker::U64 => "uint 64",
        Marker::I8 => "int 8",
        Marker::I16 => "int 16",
        Marker::I32 => "int 32",
        Marker::I64 => "int 64",
        Marker::F32 => "float 32",
        Marker::F64 => "float 64",
        Marker::FixStr(_) => "fixstr",
        Marker::Str8 => "str 8",
        Marker::Str16 => "str 16",
        Marker::Str32 => "str 32",
        Marker::Bin8 => "bin 8",
        Marker::Bin16 => "bin 16",
        Marker::Bin32 => "bin 32",
        Marker::FixExt1 => "fixext 1",
        Marker::FixExt2 => "fixext 2",
        Marker::FixExt4 => "fixext 4",
        Marker::FixExt8 => "fixext 8",
        Marker::FixExt16 => "fixext 16",
        Marker::Ext8 => "ext 8",
        Marker::Ext16 => "ext 16",
        Marker::Ext32 => "ext 32",
        Marker::FixArray(_) => "fixarray",
        Marker::Array16 => "array 16",
        Marker::Array32 => "array 32",
        Marker::FixMap(_) => "fixmap",
        Marker::Map16 => "map 16",
        Marker::Map32 => "map 32",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rmpv::Value;

    const DEPTH: usize = 256;

    fn encode(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).unwrap();
        out
    }

    fn truncated(what: &'static str, offset: usize, needed: u64, left: usize) -> PayloadError {
        PayloadError::Truncated {
            what,
            offset,
            needed,
            left,
        }
    }

    /// One value of every format, as its bytes, the longer forms written
    /// by hand with short contents (valid, if not the shortest encoding).
    fn every_kind() -> Vec<(&'static str, Vec<u8>)> {
        let long = |marker: Vec<u8>, n: usize, fill: u8| [marker, vec![fill; n]].concat();
        vec![
            ("nil", vec![0xc0]),
            ("false", vec![0xc2]),
            ("true", vec![0xc3]),
            ("positive fixint", vec![0x7f]),
            ("negative fixint", vec![0xe0]),
            ("uint 8", vec![0xcc, 0xff]),
            ("uint 16", vec![0xcd, 0xff, 0xff]),
            ("uint 32", vec![0xce, 0, 0, 0, 1]),
            ("uint 64", vec![0xcf, 0xff, 0, 0, 0, 0, 0, 0, 1]),
            ("int 8", vec![0xd0, 0x80]),
            ("int 16", vec![0xd1, 0x80, 0]),
            ("int 32", vec![0xd2, 0x80, 0, 0, 0]),
            ("int 64", vec![0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            ("float 32", vec![0xca, 0x3f, 0x80, 0, 0]),
            ("float 64", vec![0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]),
            ("fixstr", vec![0xa3, b'a', b'b', b'c']),
            ("empty fixstr", vec![0xa0]),
            ("str 8", vec![0xd9, 2, b'h', b'i']),
            ("str 16", long(vec![0xda, 0x01, 0x00], 256, b'x')),
            ("str 32", vec![0xdb, 0, 0, 0, 3, b'a', b'b', b'c']),
            // Not UTF-8: not this check's business.
            ("str 8, not UTF-8", vec![0xd9, 1, 0xff]),
            ("bin 8", vec![0xc4, 0]),
            ("bin 16", long(vec![0xc5, 0x01, 0x00], 256, 0xc1)),
            ("bin 32", vec![0xc6, 0, 0, 0, 2, 0xc1, 0xc1]),
            ("fixext 1", vec![0xd4, 1, 0xc1]),
            ("fixext 2", vec![0xd5, 1, 0, 0]),
            ("fixext 4", vec![0xd6, 0xff, 0, 0, 0, 0]),
            ("fixext 8", long(vec![0xd7, 0x80], 8, 0)),
            ("fixext 16", long(vec![0xd8, 5], 16, 0xc1)),
            ("ext 8", vec![0xc7, 3, 9, 1, 2, 3]),
            ("ext 16", vec![0xc8, 0, 1, 9, 0xc1]),
            ("ext 32", vec![0xc9, 0, 0, 0, 0, 9]),
            ("fixarray", vec![0x92, 0x01, 0xc0]),
            ("empty fixarray", vec![0x90]),
            ("array 16", vec![0xdc, 0, 2, 0xc2, 0xc3]),
            ("array 32", vec![0xdd, 0, 0, 0, 1, 0xa1, b'a']),
            ("fixmap", vec![0x81, 0xa1, b'k', 0x01]),
            ("empty fixmap", vec![0x80]),
            ("map 16", vec![0xde, 0, 1, 0x01, 0x02]),
            ("map 32", vec![0xdf, 0, 0, 0, 1, 0xa1, b'k', 0x90]),
            // Non-string keys, nested containers as keys.
            ("map of odd keys", vec![0x82, 0x91, 0x01, 0xc0, 0xc3, 0x80]),
        ]
    }

    #[test]
    fn every_kind_of_value_passes_alone_and_inside_an_array() {
        for (name, bytes) in every_kind() {
            assert_eq!(check(&bytes, DEPTH), Ok(()), "{name}: {bytes:x?}");
            let nested = [vec![0x91], bytes.clone()].concat();
            assert_eq!(check(&nested, DEPTH), Ok(()), "[{name}]");
        }
        let all = every_kind();
        let count = u16::try_from(all.len()).unwrap().to_be_bytes();
        let array: Vec<u8> = [vec![0xdc, count[0], count[1]]]
            .into_iter()
            .chain(all.into_iter().map(|(_, b)| b))
            .flatten()
            .collect();
        assert_eq!(check(&array, DEPTH), Ok(()));
    }

    #[test]
    fn the_reserved_byte_is_refused_where_a_value_starts() {
        assert_eq!(
            check(&[0xc1], DEPTH),
            Err(PayloadError::Reserved { offset: 0 })
        );
        assert_eq!(
            check(&[0x92, 0x01, 0xc1], DEPTH),
            Err(PayloadError::Reserved { offset: 2 })
        );
        assert_eq!(
            check(&[0x81, 0xc1, 0x01], DEPTH),
            Err(PayloadError::Reserved { offset: 1 }),
            "as a map key"
        );
        let e = check(&[0xc1], DEPTH).unwrap_err();
        assert!(!e.is_incomplete());
        assert_eq!(
            e.to_string(),
            "byte 0 is 0xc1, which MessagePack never uses"
        );
    }

    #[test]
    fn empty_input_is_incomplete() {
        let e = check(&[], DEPTH).unwrap_err();
        assert_eq!(e, PayloadError::Empty);
        assert!(e.is_incomplete());
        assert!(e.to_string().contains("0xc0"), "{e}");
    }

    #[test]
    fn truncated_values_say_what_is_short_and_where() {
        for (bytes, expected) in [
            (&[0xa5, b'a'][..], truncated("fixstr", 0, 6, 2)),
            (&[0xcd, 0x01], truncated("uint 16", 0, 3, 2)),
            (&[0xcb], truncated("float 64", 0, 9, 1)),
            (&[0xd9], truncated("str 8", 0, 2, 1)),
            (&[0xda, 0x01], truncated("str 16", 0, 3, 2)),
            (&[0xc6, 0, 0, 0, 3, 1], truncated("bin 32", 0, 8, 6)),
            (&[0xd6, 1, 0, 0], truncated("fixext 4", 0, 6, 4)),
            (&[0xc7, 2], truncated("ext 8", 0, 3, 2)),
            (&[0xc7, 2, 9, 0], truncated("ext 8", 0, 5, 4)),
            (&[0xdc, 0], truncated("array 16", 0, 3, 2)),
            // Two values declared, one byte left: at once.
            (&[0x92, 0x01], truncated("fixarray", 0, 3, 2)),
            (&[0x82, 0x01, 0x02], truncated("fixmap", 0, 5, 3)),
            // The inner array ended, the outer one lacks its second value.
            (&[0x92, 0x91, 0x01], truncated("fixarray", 0, 4, 3)),
            // Inside an array, the offset is the short value's.
            (&[0x91, 0x91, 0xa2, b'x'], truncated("fixstr", 2, 3, 2)),
        ] {
            let e = check(bytes, DEPTH).unwrap_err();
            assert_eq!(e, expected, "{bytes:x?}");
            assert!(e.is_incomplete());
        }
        assert_eq!(
            truncated("str 16", 3, 300, 12).to_string(),
            "truncated: the str 16 at byte 3 needs at least 300 bytes, and 12 are left"
        );
    }

    #[test]
    fn bytes_after_the_value_are_refused() {
        let e = check(&[0xc0, 0xc0], DEPTH).unwrap_err();
        assert_eq!(
            e,
            PayloadError::Trailing {
                offset: 1,
                count: 1
            }
        );
        assert!(!e.is_incomplete());
        assert_eq!(
            check(&[0x91, 0x01, 0x02, 0x03], DEPTH),
            Err(PayloadError::Trailing {
                offset: 2,
                count: 2
            })
        );
        assert!(
            e.to_string().contains("exactly one MessagePack value"),
            "{e}"
        );
    }

    #[test]
    fn huge_declared_lengths_fail_at_once_as_truncated() {
        let max = u64::from(u32::MAX);
        for (bytes, expected) in [
            // An array of 2^32 - 1 elements in 10 bytes.
            (
                &[0xdd, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5][..],
                truncated("array 32", 0, 5 + max, 10),
            ),
            (
                &[0xdf, 0xff, 0xff, 0xff, 0xff, 1, 2],
                truncated("map 32", 0, 5 + 2 * max, 7),
            ),
            (
                &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],
                truncated("str 32", 0, 5 + max, 6),
            ),
            (
                &[0xc6, 0xff, 0xff, 0xff, 0xff],
                truncated("bin 32", 0, 5 + max, 5),
            ),
            (
                &[0xc9, 0xff, 0xff, 0xff, 0xff, 1],
                truncated("ext 32", 0, 6 + max, 6),
            ),
            (
                &[0x91, 0xdc, 0xff, 0xff, 0xc0],
                truncated("array 16", 1, 3 + 0xffff, 4),
            ),
        ] {
            assert_eq!(check(bytes, DEPTH), Err(expected), "{bytes:x?}");
        }
    }

    #[test]
    fn nesting_is_bounded_by_max_depth_without_recursion() {
        // A value inside exactly DEPTH arrays passes; one more does not.
        let at_limit = [vec![0x91; DEPTH], vec![0x07]].concat();
        assert_eq!(check(&at_limit, DEPTH), Ok(()));
        let over = [vec![0x91; DEPTH + 1], vec![0x07]].concat();
        assert_eq!(
            check(&over, DEPTH),
            Err(PayloadError::TooDeep {
                what: "fixarray",
                offset: DEPTH,
                max_depth: DEPTH
            })
        );
        // A hostile mebibyte of arrays in arrays fails at the limit.
        let bomb = vec![0x91; 1 << 20];
        let e = check(&bomb, DEPTH).unwrap_err();
        assert!(
            matches!(e, PayloadError::TooDeep { offset: DEPTH, .. }),
            "{e}"
        );
        assert!(!e.is_incomplete());
        // Maps count as arrays do, and empty ones too.
        let maps = [0x81, 0xc0].repeat(3);
        assert_eq!(check(&[maps.clone(), vec![0x80]].concat(), 4), Ok(()));
        assert!(matches!(
            check(&[maps, vec![0x80]].concat(), 3),
            Err(PayloadError::TooDeep {
                what: "fixmap",
                offset: 6,
                ..
            })
        ));
        assert_eq!(check(&[0x01], 0), Ok(()), "no arrays, no depth");
        assert!(check(&[0x90], 0).is_err());
        // Unbounded depth still runs in a loop: no stack overflow.
        assert!(check(&bomb, usize::MAX).unwrap_err().is_incomplete());
    }

    /// Any dynamically typed value: nil, booleans, integers over their
    /// whole range, floats, strings and binaries long enough for their
    /// 16-bit forms, extensions, and arrays and maps (of more than 15
    /// entries at times) nested a few deep.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f32>().prop_map(Value::F32),
            any::<f64>().prop_map(Value::F64),
            ".{0,40}".prop_map(Value::from),
            proptest::collection::vec(any::<char>(), 250..300)
                .prop_map(|c| Value::from(c.into_iter().collect::<String>())),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Binary),
            (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(t, data)| Value::Ext(t, data)),
        ];
        leaf.prop_recursive(6, 128, 20, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..20).prop_map(Value::Array),
                proptest::collection::vec((inner.clone(), inner), 0..20).prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn every_encoded_value_passes_and_every_strict_prefix_is_incomplete(v in value()) {
            let bytes = encode(&v);
            prop_assert_eq!(check(&bytes, DEPTH), Ok(()));
            for end in 0..bytes.len() {
                let e = check(&bytes[..end], DEPTH);
                prop_assert!(
                    e.as_ref().is_err_and(PayloadError::is_incomplete),
                    "prefix of {} bytes: {:?}", end, e
                );
            }
            // And one more byte is one too many.
            let more = [bytes.clone(), vec![0xc0]].concat();
            prop_assert_eq!(
                check(&more, DEPTH),
                Err(PayloadError::Trailing { offset: bytes.len(), count: 1 })
            );
        }

        /// The node's check and the SDK's decoders agree on every payload
        /// (the intake passes `MAX_DEPTH - 1`): what the node accepts, a
        /// component can read, and nothing it refuses would have been.
        #[test]
        fn the_check_agrees_with_the_sdk_decoder(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            depth in 250usize..260,
            inner in prop_oneof![Just(vec![0x07]), Just(vec![0xd4, 1, 2]), Just(vec![0x80]), Just(vec![0xa1, b'x'])],
            wrap in prop_oneof![Just(vec![0x91]), Just(vec![0x81, 0xc0])],
        ) {
            let depth_limit = zmanager_sdk::MAX_DEPTH - 1;
            let nested = [wrap.repeat(depth), inner].concat();
            for b in [&bytes, &nested] {
                prop_assert_eq!(
                    check(b, depth_limit).is_ok(),
                    zmanager_sdk::decode_value(b).is_ok(),
                    "{:x?}", &b[..b.len().min(16)]
                );
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_what_passes_decodes(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            max_depth in 0usize..300,
        ) {
            if check(&bytes, max_depth).is_ok() {
                // rmpv reads exactly these bytes as one value.
                let mut rest = &bytes[..];
                prop_assert!(rmpv::decode::read_value(&mut rest).is_ok());
                prop_assert!(rest.is_empty());
            }
        }

        #[test]
        fn arbitrary_bytes_after_a_valid_prefix_never_panic(
            v in value(),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
            cut in any::<prop::sample::Index>(),
        ) {
            // Mostly valid bytes, cut and followed by noise: reaches the
            // deeper states that random bytes rarely do.
            let bytes = encode(&v);
            let mut mixed = bytes[..cut.index(bytes.len() + 1)].to_vec();
            mixed.extend_from_slice(&tail);
            let _ = check(&mixed, DEPTH);
        }
    }
}
