//! The requests' payloads: a template with the request's sequence number,
//! or a file of payloads used in turn. Everything is decoded before any
//! load starts, so a file that does not decode is an error up front.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::options::PayloadSource;

/// Makes the payload of each request.
#[derive(Debug, Clone)]
pub enum Payloads {
    Template {
        text: String,
        keys: u64,
        record: String,
    },
    /// MessagePack values, request `seq` taking `seq % len`.
    List(Vec<Bytes>),
}

impl Payloads {
    /// Reads and checks the source. `record` is the record file, for
    /// `{record}` in a template.
    pub fn load(source: &PayloadSource, keys: u64, record: Option<&Path>) -> Result<Self, String> {
        match source {
            PayloadSource::Template(text) => {
                let record = record.map_or_else(String::new, |p| {
                    let quoted = serde_json::to_string(&p.display().to_string())
                        .unwrap_or_else(|_| "\"\"".to_owned());
                    quoted[1..quoted.len() - 1].to_owned()
                });
                let payloads = Self::Template {
                    text: text.clone(),
                    keys: keys.max(1),
                    record,
                };
                payloads.get(0).map(|_| payloads)
            }
            PayloadSource::File(path) => read_file(path).map(Self::List),
        }
    }

    /// The payload of request `seq`.
    pub fn get(&self, seq: u64) -> Result<Bytes, String> {
        match self {
            Self::Template { text, keys, record } => {
                let json = text
                    .replace("{seq}", &seq.to_string())
                    .replace("{key}", &(seq % keys).to_string())
                    .replace("{record}", record);
                let value: serde_json::Value = serde_json::from_str(&json).map_err(|e| {
                    format!("the payload template is not JSON once filled in ({json}): {e}")
                })?;
                rmp_serde::to_vec_named(&value)
                    .map(Bytes::from)
                    .map_err(|e| format!("the payload template does not encode: {e}"))
            }
            Self::List(list) => {
                let n = list.len() as u64;
                Ok(list[usize::try_from(seq % n).unwrap_or(0)].clone())
            }
        }
    }
}

/// Reads a payload file: JSON lines by extension, else MessagePack values.
fn read_file(path: &PathBuf) -> Result<Vec<Bytes>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let json = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("json" | "jsonl" | "ndjson")
    );
    let list = if json {
        json_lines(&bytes)
    } else {
        msgpack_values(&bytes)
    }
    .map_err(|e| format!("{}: {e}", path.display()))?;
    if list.is_empty() {
        return Err(format!("{}: no payloads in it", path.display()));
    }
    Ok(list)
}

/// One JSON value a line (blank lines skipped), each as MessagePack.
fn json_lines(bytes: &[u8]) -> Result<Vec<Bytes>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}"))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("line {}: not JSON: {e}", n + 1))?;
        let encoded = rmp_serde::to_vec_named(&value)
            .map_err(|e| format!("line {}: does not encode: {e}", n + 1))?;
        out.push(Bytes::from(encoded));
    }
    Ok(out)
}

/// MessagePack values one after another, each checked as the node's
/// decoder checks a payload.
fn msgpack_values(bytes: &[u8]) -> Result<Vec<Bytes>, String> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let before = rest.len();
        let at = bytes.len() - before;
        rmpv::decode::read_value(&mut rest)
            .map_err(|e| format!("byte {at}: not a MessagePack value: {e}"))?;
        let value = &bytes[at..bytes.len() - rest.len()];
        refuse_reserved(value).map_err(|e| format!("byte {at}: {e}"))?;
        out.push(Bytes::copy_from_slice(value));
    }
    Ok(out)
}

/// What rmpv accepts and the node refuses: the reserved byte 0xc1.
fn refuse_reserved(value: &[u8]) -> Result<(), String> {
    if value.first() == Some(&0xc1) {
        return Err("the reserved byte 0xc1".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(b: &Bytes) -> serde_json::Value {
        rmp_serde::from_slice(b).unwrap()
    }

    #[test]
    fn a_template_is_filled_in_per_request() {
        let source =
            PayloadSource::Template(r#"{"log": "{record}", "key": "k{key}", "seq": {seq}}"#.into());
        let p = Payloads::load(&source, 4, Some(Path::new("/tmp/a \"b\".log"))).unwrap();
        let v = decode(&p.get(7).unwrap());
        assert_eq!(
            v,
            serde_json::json!({"log": "/tmp/a \"b\".log", "key": "k3", "seq": 7})
        );
        let bad = PayloadSource::Template("{seq".into());
        assert!(
            Payloads::load(&bad, 4, None)
                .unwrap_err()
                .contains("not JSON")
        );
    }

    #[test]
    fn files_of_json_lines_and_of_messagepack_are_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("chaos-payload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = dir.join("p.jsonl");
        std::fs::write(&json, "{\"a\": 1}\n\n[2]\n").unwrap();
        let p = Payloads::load(&PayloadSource::File(json.clone()), 1, None).unwrap();
        assert_eq!(decode(&p.get(0).unwrap()), serde_json::json!({"a": 1}));
        assert_eq!(decode(&p.get(3).unwrap()), serde_json::json!([2]));
        std::fs::write(&json, "{\"a\": 1}\nnope\n").unwrap();
        let e = Payloads::load(&PayloadSource::File(json), 1, None).unwrap_err();
        assert!(e.contains("line 2"), "{e}");

        let mp = dir.join("p.msgpack");
        std::fs::write(&mp, [0x01, 0x92, 0x02, 0x03, 0xa1, b'x']).unwrap();
        let p = Payloads::load(&PayloadSource::File(mp.clone()), 1, None).unwrap();
        assert_eq!(decode(&p.get(1).unwrap()), serde_json::json!([2, 3]));
        assert_eq!(decode(&p.get(2).unwrap()), serde_json::json!("x"));
        std::fs::write(&mp, [0x01, 0x92, 0x02]).unwrap();
        let e = Payloads::load(&PayloadSource::File(mp.clone()), 1, None).unwrap_err();
        assert!(e.contains("byte 1"), "{e}");
        std::fs::write(&mp, []).unwrap();
        assert!(Payloads::load(&PayloadSource::File(mp), 1, None).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
