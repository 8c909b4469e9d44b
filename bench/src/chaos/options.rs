//! What `zmanager chaos` runs, and every check of it made before any load
//! starts.

use std::path::PathBuf;
use std::time::Duration;

use super::schedule::{Fault, Planned};

/// Where the node is.
#[derive(Debug, Clone)]
pub enum Target {
    /// Chaos starts the node (`zmanager up`) on the user's configuration,
    /// with its own data directory and ipc sockets (the same paths after
    /// a restart).
    Start {
        /// `--config`.
        config: Option<PathBuf>,
        /// `--flows`, `--mappings`: override the configuration's.
        flows: Option<PathBuf>,
        mappings: Option<PathBuf>,
        /// `--component`: dynamic components, added to the configuration's.
        components: Vec<PathBuf>,
        /// `--workers`: overrides the configuration's.
        workers: Option<usize>,
    },
    /// A node already running: only faults on the client's side and the
    /// user's own commands apply.
    Running { intake: String, publish: String },
}

/// Where the payloads come from.
#[derive(Debug, Clone)]
pub enum PayloadSource {
    /// JSON text with `{seq}` (the request's sequence number, 0…K-1),
    /// `{key}` (`seq % keys`) and `{record}` (the record file's path, as
    /// JSON string content) replaced, then encoded as MessagePack.
    Template(String),
    /// A file of payloads, request `seq` taking payload `seq % n`: JSON
    /// lines (`.json`, `.jsonl`, `.ndjson`), or MessagePack values one
    /// after another (any other name).
    File(PathBuf),
}

/// A whole chaos run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// The `zmanager` binary (its `up` is run).
    pub program: PathBuf,
    /// Environment variables set on every process it starts.
    pub env: Vec<(String, String)>,
    pub target: Target,
    /// The flow every request goes into.
    pub flow: String,
    /// Requests (K), each its own id.
    pub requests: u64,
    /// Requests outstanding at once (W).
    pub in_flight: usize,
    pub payload: PayloadSource,
    /// Ordering keys: `{key}` in the template, and `order_key` on requests
    /// of a flow ordered by `envelope`.
    pub keys: u64,
    /// The faults and how often each comes.
    pub faults: Vec<Planned>,
    /// How long `--slow-subscriber` stops reading.
    pub slow_for: Duration,
    /// A file the flow's action appends a line to per call.
    pub record_file: Option<PathBuf>,
    /// Which whitespace-separated field of a record line (1 = the first)
    /// names the request: its sequence number or its id.
    pub record_field: usize,
    /// More runs than this of the action for one id fails the run (exit 1);
    /// `None`: reported only.
    pub max_runs: Option<u64>,
    /// A request with no `accepted` (nor result) this long after it was
    /// sent is sent again, same id.
    pub resend_after: Duration,
    /// An accepted request with no result this long after its last send is
    /// sent again, same id (its result may have been missed).
    pub result_patience: Duration,
    /// No new result for this long ends the run: what is missing is lost.
    pub give_up_after: Duration,
    /// After the last result, how long to listen for late copies.
    pub settle: Duration,
}

impl ChaosOptions {
    /// The defaults of `zmanager chaos`, for `flow`.
    pub fn new(program: PathBuf, flow: &str) -> Self {
        Self {
            program,
            env: Vec::new(),
            target: Target::Start {
                config: None,
                flows: None,
                mappings: None,
                components: Vec::new(),
                workers: Some(2),
            },
            flow: flow.to_owned(),
            requests: 2000,
            in_flight: 100,
            payload: PayloadSource::Template("{\"seq\": {seq}}".to_owned()),
            keys: 16,
            faults: Vec::new(),
            slow_for: Duration::from_secs(2),
            record_file: None,
            record_field: 2,
            max_runs: None,
            resend_after: Duration::from_secs(2),
            result_patience: Duration::from_secs(5),
            give_up_after: Duration::from_secs(60),
            settle: Duration::from_secs(1),
        }
    }

    /// Every problem with the values that needs no node to see, in one
    /// message. `workers` is the number of workers the node will run.
    pub fn validate(&self, workers: Option<usize>) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.requests == 0 {
            problems.push("--requests must be at least 1".to_owned());
        }
        if self.in_flight == 0 {
            problems.push("--in-flight must be at least 1".to_owned());
        }
        if self.keys == 0 {
            problems.push("--keys must be at least 1".to_owned());
        }
        if self.record_field == 0 {
            problems.push("--record-field counts from 1".to_owned());
        }
        if self.flow.is_empty() {
            problems.push("--flow must name a flow".to_owned());
        }
        for planned in &self.faults {
            if planned.every.is_zero() {
                problems.push(format!("{}: the interval must be above 0", planned.fault));
            }
            let on_node = matches!(
                planned.fault,
                Fault::KillWorker | Fault::StopWorker | Fault::KillNode
            );
            match (&self.target, on_node) {
                (Target::Running { .. }, true) => problems.push(format!(
                    "{} needs a node started by chaos: against a running node (--intake) only \
                     --slow-subscriber, --drop-connection and --fault-command apply",
                    planned.fault
                )),
                (Target::Start { .. }, true)
                    if workers == Some(0) && planned.fault != Fault::KillNode =>
                {
                    problems.push(format!(
                        "{} cannot be met: the node runs no worker processes (--workers 0)",
                        planned.fault
                    ));
                }
                _ => {}
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(fault: Fault) -> Planned {
        Planned {
            fault,
            every: Duration::from_secs(1),
        }
    }

    #[test]
    fn faults_that_cannot_be_met_are_refused() {
        let mut o = ChaosOptions::new(PathBuf::from("zmanager"), "Echo");
        o.faults = vec![planned(Fault::KillWorker), planned(Fault::KillNode)];
        assert!(o.validate(Some(2)).is_ok());
        let e = o.validate(Some(0)).unwrap_err();
        assert!(
            e.contains("--kill-worker") && e.contains("--workers 0"),
            "{e}"
        );
        assert!(
            !e.contains("--kill-node"),
            "a node can be killed without workers: {e}"
        );
        o.target = Target::Running {
            intake: "tcp://127.0.0.1:1".into(),
            publish: "tcp://127.0.0.1:2".into(),
        };
        let e = o.validate(None).unwrap_err();
        assert!(
            e.contains("--kill-worker") && e.contains("--kill-node"),
            "{e}"
        );
        o.faults = vec![
            planned(Fault::DropConnection),
            planned(Fault::SlowSubscriber),
        ];
        assert!(o.validate(None).is_ok());
    }

    #[test]
    fn empty_runs_are_refused() {
        let mut o = ChaosOptions::new(PathBuf::from("zmanager"), "Echo");
        o.requests = 0;
        o.in_flight = 0;
        let e = o.validate(Some(2)).unwrap_err();
        assert!(e.contains("--requests") && e.contains("--in-flight"), "{e}");
    }
}
