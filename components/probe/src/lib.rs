//! The Probe component: actions that misbehave on request, shipped so users
//! (and this project's reliability tests) can exercise a node.
//!
//! | action  | payload            | what it does                                        |
//! |---------|--------------------|-----------------------------------------------------|
//! | `echo`  | anything           | returns the payload unchanged                       |
//! | `fail`  | anything           | returns an [`ErrorKind::Failed`] error              |
//! | `panic` | anything           | panics (the worker catches it)                      |
//! | `sleep` | `{"ms": u64}`      | sleeps `ms` (default 0, at most [`MAX_SLEEP_MS`]), then echoes |
//! | `exit`  | anything           | **ends the whole worker process** with exit code 3  |
//! | `count` | any one value      | answers `{"pid": u32, "payload": <the value>}`      |
//! | `panic_while` | `{"marker": path}` | panics while the file `path` exists, else echoes (a transient fault) |
//! | `record` | `{"log": path, "key": str, "seq": u64, "fail": kind?, "sleep_ms": u64?}` | appends `key seq attempt micros` to the file `path`, sleeps `sleep_ms` (default 0, capped as `sleep`), then echoes — or fails with `fail` (`failed` or `bad_request`) |
//!
//! `record` shows what reached the component, in the order it did: every
//! call appends one line with a single `write` to a file opened in append
//! mode, so the lines of all worker processes are in the order their calls
//! happened. The ordering and retry tests read it, and so does `zmanager
//! chaos --record-file` (its runs per id). With `sleep_ms`, a call is
//! recorded well before its result leaves the worker: a worker killed
//! then has run the action for a request the node will deliver again —
//! an action that is not idempotent, on purpose (docs/chaos.md).
//!
//! **Do not map `Probe.exit` in a production configuration**: it calls
//! [`std::process::exit`], which kills every message in flight in that
//! worker process, not just its own. It exists to test what a node does when
//! a worker dies.
//!
//! Action mappings name the actions as `Probe.echo`, `Probe.fail`, and so on.
//!
//! [`ErrorKind::Failed`]: zmanager_sdk::ErrorKind::Failed

use std::time::Duration;

use rmpv::Value;
use serde::Deserialize;
use zmanager_sdk::{ActionError, Component, Request};

/// The longest `sleep` sleeps, in milliseconds; a longer `ms` is capped.
pub const MAX_SLEEP_MS: u64 = 60_000;

pub use zmanager_sdk::MAX_DEPTH;

/// The process exit code of the `exit` action.
pub const EXIT_CODE: i32 = 3;

/// The Probe component (`Probe.echo`, `Probe.fail`, `Probe.panic`,
/// `Probe.sleep`, `Probe.exit`, `Probe.count`).
///
/// **Warning:** `Probe.exit` ends the worker process that runs it (exit code
/// [`EXIT_CODE`]), with every other message in flight there. Map it only in
/// tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Probe;

/// The `sleep` payload.
#[derive(Deserialize)]
struct Sleep {
    #[serde(default)]
    ms: u64,
}

impl Component for Probe {
    fn name(&self) -> &'static str {
        "Probe"
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn actions(&self) -> &'static [&'static str] {
        &[
            "echo",
            "fail",
            "panic",
            "sleep",
            "exit",
            "count",
            "panic_while",
            "record",
        ]
    }

    fn call(&self, action: &str, request: &Request<'_>) -> Result<Vec<u8>, ActionError> {
        match action {
            "echo" => Ok(request.payload.to_vec()),
            "fail" => Err(ActionError::failed("probe: failing on purpose")),
            // Panicking is this action's purpose: it tests the worker's
            // catch_unwind.
            "panic" => panic!("probe: panicking on purpose"),
            "sleep" => {
                let sleep: Sleep = request.decode()?;
                std::thread::sleep(sleep_duration(sleep.ms));
                Ok(request.payload.to_vec())
            }
            // Ending the process is this action's purpose: it tests what the
            // node does when a worker dies.
            "exit" => std::process::exit(EXIT_CODE),
            "count" => count(request.payload),
            "panic_while" => {
                let marker: Marker = request.decode()?;
                // Panicking (while the marker exists) is this action's purpose:
                // it is a fault that goes away, for testing retries and replay.
                assert!(
                    !std::path::Path::new(&marker.marker).exists(),
                    "probe: panicking while {} exists",
                    marker.marker
                );
                Ok(request.payload.to_vec())
            }
            "record" => {
                let record: Record = request.decode()?;
                record.append(request.context.attempt)?;
                std::thread::sleep(sleep_duration(record.sleep_ms));
                match record.fail.as_deref() {
                    None => Ok(request.payload.to_vec()),
                    Some("bad_request") => {
                        Err(ActionError::bad_request("probe: recorded, then refused"))
                    }
                    Some(_) => Err(ActionError::failed("probe: recorded, then failed")),
                }
            }
            other => Err(ActionError::unknown_action(self.name(), other)),
        }
    }
}

/// The payload of `record`.
#[derive(Deserialize)]
struct Record {
    log: String,
    key: String,
    seq: u64,
    #[serde(default)]
    fail: Option<String>,
    #[serde(default)]
    sleep_ms: u64,
}

impl Record {
    /// Appends `key seq attempt micros\n` to the log in one `write`.
    fn append(&self, attempt: u32) -> Result<(), ActionError> {
        use std::io::Write as _;
        static LOGS: std::sync::Mutex<Vec<(String, std::fs::File)>> =
            std::sync::Mutex::new(Vec::new());
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let line = format!("{} {} {attempt} {micros}\n", self.key, self.seq);
        let failed = |e: std::io::Error| ActionError::failed(format!("record {}: {e}", self.log));
        let mut logs = logs_lock(&LOGS);
        if !logs.iter().any(|(path, _)| *path == self.log) {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .map_err(failed)?;
            logs.push((self.log.clone(), file));
        }
        let (_, file) = logs
            .iter_mut()
            .find(|(path, _)| *path == self.log)
            .ok_or_else(|| ActionError::failed("record: log not open"))?;
        file.write_all(line.as_bytes()).map_err(failed)
    }
}

/// The lock of the open logs, even if a panic poisoned it.
fn logs_lock<T>(lock: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The payload of `panic_while`.
#[derive(Deserialize)]
struct Marker {
    marker: String,
}

zmanager_sdk::register!(Probe);

/// How long `sleep` sleeps for `ms`.
fn sleep_duration(ms: u64) -> Duration {
    Duration::from_millis(ms.min(MAX_SLEEP_MS))
}

/// `{"pid": <this process>, "payload": <the payload's value>}`.
fn count(payload: &[u8]) -> Result<Vec<u8>, ActionError> {
    let value = decode_value(payload)?;
    let response = Value::Map(vec![
        (Value::from("pid"), Value::from(std::process::id())),
        (Value::from("payload"), value),
    ]);
    let mut out = Vec::with_capacity(payload.len() + 16);
    rmpv::encode::write_value(&mut out, &response)
        .map_err(|e| ActionError::failed(format!("response does not encode: {e}")))?;
    Ok(out)
}

/// Decodes exactly one MessagePack value (see [`zmanager_sdk::decode_value`]).
fn decode_value(payload: &[u8]) -> Result<Value, ActionError> {
    zmanager_sdk::decode_value(payload)
        .map_err(|e| ActionError::bad_request(format!("payload does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use serde::Deserialize;
    use zmanager_sdk::{ErrorKind, respond};

    use super::*;

    #[test]
    fn echo_returns_the_payload_unchanged() {
        let payload = respond(&BTreeMap::from([("name", "ada")])).unwrap();
        let response = Probe.call("echo", &Request::new(&payload)).unwrap();
        let decoded: BTreeMap<String, String> = rmp_serde::from_slice(&response).unwrap();
        assert_eq!(
            decoded,
            BTreeMap::from([("name".to_owned(), "ada".to_owned())])
        );
        assert_eq!(Probe.call("echo", &Request::new(&[0xc1])).unwrap(), [0xc1]);
    }

    #[test]
    fn fail_always_fails() {
        for payload in [respond(&()).unwrap(), vec![], vec![0xc1]] {
            let error = Probe.call("fail", &Request::new(&payload)).unwrap_err();
            assert_eq!(error.kind, ErrorKind::Failed);
            assert_eq!(error, ActionError::failed("probe: failing on purpose"));
        }
    }

    #[test]
    fn panic_panics_with_its_message() {
        let payload = respond(&()).unwrap();
        let request = Request::new(&payload);
        let panic = std::panic::catch_unwind(|| Probe.call("panic", &request)).unwrap_err();
        let message = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str));
        assert_eq!(message, Some("probe: panicking on purpose"));
    }

    #[test]
    fn sleep_sleeps_then_echoes() {
        let payload = respond(&BTreeMap::from([("ms", 30u64)])).unwrap();
        let start = Instant::now();
        let response = Probe.call("sleep", &Request::new(&payload)).unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(30),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(response, payload);
        let decoded: BTreeMap<String, u64> = rmp_serde::from_slice(&response).unwrap();
        assert_eq!(decoded["ms"], 30);
    }

    #[test]
    fn sleep_defaults_to_zero_and_keeps_other_fields() {
        #[derive(serde::Serialize)]
        struct Other<'a> {
            note: &'a str,
        }
        let payload = rmp_serde::to_vec_named(&Other { note: "x" }).unwrap();
        let start = Instant::now();
        let response = Probe.call("sleep", &Request::new(&payload)).unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(response, payload);
    }

    #[test]
    fn sleep_is_capped() {
        assert_eq!(sleep_duration(0), Duration::ZERO);
        assert_eq!(sleep_duration(1_500), Duration::from_millis(1_500));
        assert_eq!(sleep_duration(MAX_SLEEP_MS), Duration::from_secs(60));
        assert_eq!(sleep_duration(u64::MAX), Duration::from_secs(60));
    }

    #[test]
    fn sleep_with_a_bad_payload_is_a_bad_request() {
        let payloads = [
            respond(&BTreeMap::from([("ms", -1i64)])).unwrap(),
            respond(&BTreeMap::from([("ms", "10")])).unwrap(),
            respond(&42u32).unwrap(),
            vec![0xc1],
            vec![],
        ];
        for payload in payloads {
            let error = Probe.call("sleep", &Request::new(&payload)).unwrap_err();
            assert_eq!(error.kind, ErrorKind::BadRequest, "{payload:x?}: {error}");
        }
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Count<T> {
        pid: u32,
        payload: T,
    }

    #[test]
    fn count_reports_the_process_and_the_payload() {
        let payload = respond(&BTreeMap::from([("n", 7u8)])).unwrap();
        let response = Probe.call("count", &Request::new(&payload)).unwrap();
        let decoded: Count<BTreeMap<String, u8>> = rmp_serde::from_slice(&response).unwrap();
        assert_eq!(
            decoded,
            Count {
                pid: std::process::id(),
                payload: BTreeMap::from([("n".to_owned(), 7)]),
            }
        );

        let payload = respond("anything").unwrap();
        let response = Probe.call("count", &Request::new(&payload)).unwrap();
        let decoded: Count<String> = rmp_serde::from_slice(&response).unwrap();
        assert_eq!(decoded.payload, "anything");
        assert_eq!(decoded.pid, std::process::id());
    }

    #[test]
    fn count_with_a_payload_that_does_not_decode_is_a_bad_request() {
        let mut trailing = respond(&1u8).unwrap();
        trailing.push(0xc0);
        for payload in [
            vec![],
            vec![0xc1],
            vec![0x92, 0x01, 0xc1],
            vec![0x92, 0x01],
            trailing,
        ] {
            let error = Probe.call("count", &Request::new(&payload)).unwrap_err();
            assert_eq!(error.kind, ErrorKind::BadRequest, "{payload:x?}: {error}");
        }
    }

    #[test]
    fn count_takes_a_payload_nested_up_to_the_limit() {
        let depth = MAX_DEPTH - 1;
        let payload = [vec![0x91; depth], vec![0x07]].concat();
        let response = Probe.call("count", &Request::new(&payload)).unwrap();
        let decoded = rmpv::decode::read_value(&mut &response[..]).unwrap();
        let mut value = &decoded["payload"];
        for _ in 0..depth {
            value = &value[0];
        }
        assert_eq!(value, &Value::from(7));
        let too_deep = [vec![0x91; MAX_DEPTH], vec![0x07]].concat();
        let error = Probe.call("count", &Request::new(&too_deep)).unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadRequest, "{error}");
    }

    #[test]
    fn an_unknown_action_is_reported() {
        let payload = respond(&()).unwrap();
        let error = Probe.call("explode", &Request::new(&payload)).unwrap_err();
        assert_eq!(error.kind, ErrorKind::UnknownAction);
        assert!(error.message.contains("explode"), "{error}");
        assert_eq!(Probe.name(), "Probe");
        assert_eq!(Probe.actions().len(), 8);
    }

    #[test]
    fn record_appends_a_line_then_echoes_or_fails() {
        let log = std::env::temp_dir().join(format!("probe-record-{}", std::process::id()));
        let _ = std::fs::remove_file(&log);
        #[derive(serde::Serialize)]
        struct R<'a> {
            log: String,
            key: &'a str,
            seq: u64,
            fail: Option<&'a str>,
        }
        let payload = |seq, fail| {
            respond(&R {
                log: log.display().to_string(),
                key: "k1",
                seq,
                fail,
            })
            .unwrap()
        };
        let request_of = |payload: &[u8], attempt| {
            let mut request = Request::new(payload);
            request.context.attempt = attempt;
            Probe.call("record", &request)
        };
        let ok = payload(7, None);
        assert_eq!(request_of(&ok, 1).unwrap(), ok);
        let error = request_of(&payload(8, Some("failed")), 2).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Failed);
        let error = request_of(&payload(9, Some("bad_request")), 1).unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadRequest);
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0][..3], ["k1", "7", "1"]);
        assert_eq!(lines[1][..3], ["k1", "8", "2"]);
        assert_eq!(lines[2][..3], ["k1", "9", "1"]);
        let error = request_of(&respond(&1u8).unwrap(), 1).unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadRequest);
        std::fs::remove_file(&log).unwrap();
    }

    #[test]
    fn panic_while_panics_only_while_the_marker_exists() {
        let marker = std::env::temp_dir().join(format!("probe-marker-{}", std::process::id()));
        std::fs::write(&marker, b"").unwrap();
        let payload = rmp_serde::to_vec_named(&std::collections::BTreeMap::from([(
            "marker",
            marker.display().to_string(),
        )]))
        .unwrap();
        let panicked =
            std::panic::catch_unwind(|| Probe.call("panic_while", &Request::new(&payload)))
                .is_err();
        assert!(panicked);
        std::fs::remove_file(&marker).unwrap();
        assert_eq!(
            Probe.call("panic_while", &Request::new(&payload)).unwrap(),
            payload
        );
    }
}
