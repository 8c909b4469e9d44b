//! `zmanager chaos`: a user's flow under load while faults are injected,
//! every result checked against the request that produced it.
//!
//! - [`options`]: what to run, and the checks made before any load;
//! - [`schedule`]: which fault is due when (no I/O);
//! - [`payload`]: the requests' payloads (a template or a file);
//! - [`client`]: the client's sockets, made again after a fault;
//! - [`checker`]: lost, duplicated, unexpected, errors, order (no I/O);
//! - [`record`]: how many times the action ran per id, from its record file;
//! - [`report`]: the table and the JSON.
//!
//! The node is started with [`crate::process`], as `zmanager bench`'s is,
//! on ipc sockets in the run's directory and its own data directory, so a
//! restart after `--kill-node` finds the same endpoints and journal.
//!
//! The client follows the at-least-once discipline of `docs/protocol.md`
//! §7b: every request asks for `accepted`; one not acknowledged within
//! `resend_after` is sent again with the same id, and so is one
//! acknowledged whose result has not come within `result_patience` (its
//! result may have been published while the client was not listening).

pub mod checker;
pub mod client;
pub mod options;
pub mod payload;
pub mod record;
pub mod report;
pub mod schedule;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use options::{ChaosOptions, PayloadSource, Target};
pub use report::{ChaosReport, FaultCounts};
pub use schedule::{Fault, Planned};

use self::checker::{Checker, Digest, Seen};
use self::client::Connection;
use self::payload::Payloads;
use crate::BenchError;
use crate::process::{self, Node, TempDir};
use zmanager::node::config::NodeConfig;
use zmanager::ordering::OrderBy;
use zmanager_client::wire::envelope::{Envelope, Kind, Status, now_us};
use zmanager_client::wire::error_code::ErrorCode;
use zmanager_client::wire::topic::Topic;

/// How often the driver looks at the clock (faults, resends, progress).
const TICK: Duration = Duration::from_millis(50);
/// How often progress is reported.
const PROGRESS: Duration = Duration::from_millis(250);
/// The longest wait for a (re)started node to answer a ping.
const CONNECT_LIMIT: Duration = Duration::from_secs(30);

/// Where a run is, for a progress line.
#[derive(Debug, Clone)]
pub struct ChaosProgress {
    pub phase: &'static str,
    /// Requests sent (ids), answered, in all.
    pub sent: u64,
    pub answered: u64,
    pub total: u64,
    pub in_flight: usize,
    pub faults: FaultCounts,
    pub elapsed: Duration,
}

/// What was resolved before the load: the node's settings as chaos will
/// run them.
struct Plan {
    workers: Option<usize>,
    liveness: Duration,
    journal: Option<bool>,
    order_by: Option<OrderBy>,
    payloads: Payloads,
}

/// Checks everything that can be checked without a node: the options, the
/// configuration and its catalog, the flow, the payloads, the schedule.
fn plan(options: &ChaosOptions) -> Result<Plan, BenchError> {
    let invalid = BenchError::Invalid;
    let (workers, liveness, journal, order_by) = match &options.target {
        Target::Start {
            config,
            flows,
            mappings,
            workers,
            ..
        } => {
            let mut node = match config {
                Some(path) => NodeConfig::from_file(path).map_err(|e| invalid(e.to_string()))?,
                None => NodeConfig::default(),
            };
            if workers.is_some() {
                node.workers = *workers;
            }
            if let Some(dir) = flows {
                node.catalog.flows = Some(dir.clone());
            }
            if let Some(dir) = mappings {
                node.catalog.mappings = Some(dir.clone());
            }
            if node.security.is_some() {
                return Err(invalid(
                    "the configuration has [security]: chaos's client has no keys; run the node \
                     yourself and point chaos at it with --intake/--publish only if it lets \
                     unauthenticated clients in"
                        .to_owned(),
                ));
            }
            let (catalog, diagnostics) = node.load_catalog();
            let errors: Vec<String> = diagnostics.errors().map(ToString::to_string).collect();
            if !errors.is_empty() {
                return Err(invalid(format!(
                    "the catalog has errors (zmanager check says more):\n{}",
                    errors.join("\n")
                )));
            }
            let Some(flow) = catalog.flow(&options.flow) else {
                let known: Vec<&str> = catalog.flows.keys().map(String::as_str).collect();
                return Err(invalid(format!(
                    "unknown flow {:?}: the catalog has {}",
                    options.flow,
                    known.join(", ")
                )));
            };
            (
                Some(node.worker_count()),
                node.liveness,
                Some(node.journal.enabled),
                flow.flow.order_by.clone(),
            )
        }
        Target::Running { .. } => (None, Duration::from_secs(3), None, None),
    };
    options.validate(workers).map_err(invalid)?;
    let payloads = Payloads::load(
        &options.payload,
        options.keys,
        options.record_file.as_deref(),
    )
    .map_err(invalid)?;
    if let Some(OrderBy::Payload(_)) = &order_by {
        let by = order_by.as_ref().unwrap_or(&OrderBy::Envelope);
        let payload = payloads.get(0).map_err(invalid)?;
        by.key_of(&Envelope::request("0", options.flow.clone()), &payload)
            .map_err(|e| {
                invalid(format!(
                    "flow {} is ordered by a payload field the payloads lack: {e}",
                    options.flow
                ))
            })?;
    }
    Ok(Plan {
        workers,
        liveness,
        journal,
        order_by,
        payloads,
    })
}

/// Runs a chaos test. Bad input is [`BenchError::Invalid`], before any
/// load starts. `on_progress` is called a few times a second.
pub fn run(
    options: &ChaosOptions,
    on_progress: &mut dyn FnMut(&ChaosProgress),
) -> Result<ChaosReport, BenchError> {
    let plan = plan(options)?;
    let record_from = options
        .record_file
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len());
    let dir = TempDir::new("zmanager-chaos")?;
    let mut node = match &options.target {
        Target::Start { .. } => {
            on_progress(&ChaosProgress {
                phase: "starting the node",
                sent: 0,
                answered: 0,
                total: options.requests,
                in_flight: 0,
                faults: FaultCounts::default(),
                elapsed: Duration::ZERO,
            });
            let node = start_node(options, &dir, 1)?;
            node.wait_for_workers(plan.workers.unwrap_or(0))?;
            Some(node)
        }
        Target::Running { .. } => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| BenchError::Io("cannot start a runtime".to_owned(), e))?;
    let mut driver = Driver::new(options, &plan, &dir);
    let outcome = runtime.block_on(driver.drive(&mut node, on_progress));
    if let Some(node) = &mut node {
        node.stop();
    }
    driver.reap_commands(Duration::from_secs(5));
    let elapsed = outcome?;
    let counts = driver.checker.counts();
    let multiplicity = match &options.record_file {
        Some(path) => Some(
            record::read(
                path,
                record_from,
                options.record_field,
                options.requests,
                |f| driver.checker.seq_of(f),
                |s| driver.checker.id(s),
                |s| driver.ok_results.contains(&s),
            )
            .map_err(BenchError::Protocol)?,
        ),
        None => None,
    };
    let never_came = ChaosReport::never_came(&options.faults, elapsed);
    let clean = ChaosReport::is_clean(
        &counts,
        multiplicity.as_ref(),
        options.max_runs,
        &never_came,
    );
    Ok(ChaosReport {
        flow: options.flow.clone(),
        requests: options.requests,
        in_flight: options.in_flight,
        node: match options.target {
            Target::Start { .. } => "started",
            Target::Running { .. } => "running",
        },
        workers: plan.workers,
        journal: plan.journal,
        elapsed_s: elapsed.as_secs_f64(),
        counts,
        faults: driver.faults,
        multiplicity,
        max_runs_allowed: options.max_runs,
        never_came,
        clean,
    })
}

/// `zmanager up` on the user's configuration, on ipc sockets and a data
/// directory inside `dir` (the same at every start), without HTTP.
fn start_node(options: &ChaosOptions, dir: &TempDir, start: u32) -> Result<Node, BenchError> {
    let Target::Start {
        config,
        flows,
        mappings,
        components,
        workers,
    } = &options.target
    else {
        return Err(BenchError::Protocol("no node to start".to_owned()));
    };
    let mut command = Command::new(&options.program);
    command.envs(options.env.iter().map(|(k, v)| (k, v)));
    command
        .args(["up", "--exit-with-parent", "--no-http", "--ipc"])
        .arg(dir.path.join("node"))
        .arg("--data-dir")
        .arg(dir.path.join("data"));
    if let Some(path) = config {
        command.arg("--config").arg(path);
    }
    if let Some(path) = flows {
        command.arg("--flows").arg(path);
    }
    if let Some(path) = mappings {
        command.arg("--mappings").arg(path);
    }
    for path in components {
        command.arg("--component").arg(path);
    }
    if let Some(n) = workers {
        command.args(["--workers", &n.to_string()]);
    }
    let name = if start == 1 {
        "node".to_owned()
    } else {
        format!("node start {start}")
    };
    Node::spawn(command, &name, dir)
}

/// The state of a run between ticks.
struct Driver<'a> {
    options: &'a ChaosOptions,
    plan: &'a Plan,
    dir: &'a TempDir,
    service: String,
    reply_to: String,
    topic: Bytes,
    checker: Checker,
    /// Per request, when it was last sent (`None`: not yet, or due again).
    last_sent: Vec<Option<Instant>>,
    /// Requests sent and not answered.
    in_flight: BTreeSet<u64>,
    next_seq: u64,
    ok_results: std::collections::HashSet<u64>,
    faults: FaultCounts,
    /// Workers stopped, and when.
    stopped: Vec<(u32, Instant)>,
    commands: Vec<Child>,
    slow_until: Option<Instant>,
    node_starts: u32,
    rng: u64,
}

impl<'a> Driver<'a> {
    fn new(options: &'a ChaosOptions, plan: &'a Plan, dir: &'a TempDir) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos());
        let service = format!("chaos-{}-{nanos}", std::process::id());
        let topic = Topic {
            flow: options.flow.clone(),
            ..Topic::default()
        };
        Self {
            options,
            plan,
            dir,
            reply_to: format!("@reply~{service}~"),
            checker: Checker::new(
                &format!("{service}-"),
                options.requests,
                plan.order_by.is_some(),
            ),
            service,
            topic: Bytes::from(topic.to_string()),
            last_sent: vec![None; usize::try_from(options.requests).unwrap_or(0)],
            in_flight: BTreeSet::new(),
            next_seq: 0,
            ok_results: std::collections::HashSet::new(),
            faults: FaultCounts::default(),
            stopped: Vec::new(),
            commands: Vec::new(),
            slow_until: None,
            node_starts: 1,
            rng: u64::from(nanos) | 1,
        }
    }

    fn endpoints(&self, node: Option<&Node>) -> (String, String) {
        match (&self.options.target, node) {
            (Target::Running { intake, publish }, _) => (intake.clone(), publish.clone()),
            (_, Some(node)) => (node.intake.clone(), node.publish.clone()),
            (_, None) => (String::new(), String::new()),
        }
    }

    async fn connect(&self, node: Option<&Node>) -> Result<Connection, BenchError> {
        let (intake, publish) = self.endpoints(node);
        Connection::open(
            &intake,
            &publish,
            &self.service,
            &self.reply_to,
            CONNECT_LIMIT,
        )
        .await
    }

    fn progress(&self, phase: &'static str, started: Instant) -> ChaosProgress {
        ChaosProgress {
            phase,
            sent: self.next_seq,
            answered: self.checker.answered(),
            total: self.options.requests,
            in_flight: self.in_flight.len(),
            faults: self.faults.clone(),
            elapsed: started.elapsed(),
        }
    }

    /// The load, the faults and the settling; how long the load took.
    async fn drive(
        &mut self,
        node: &mut Option<Node>,
        on_progress: &mut dyn FnMut(&ChaosProgress),
    ) -> Result<Duration, BenchError> {
        let mut connection = self.connect(node.as_ref()).await?;
        let mut schedule = schedule::Schedule::new(&self.options.faults);
        let started = Instant::now();
        let mut last_answer = Instant::now();
        let mut last_progress = Instant::now();
        let mut tick = tokio::time::interval(TICK);
        on_progress(&self.progress("running", started));
        self.fill(&connection)?;
        while self.checker.answered() < self.options.requests {
            let reading = self.slow_until.is_none();
            tokio::select! {
                message = connection.received.recv(), if reading => match message {
                    Some(frames) => {
                        if self.handle(&frames)? {
                            last_answer = Instant::now();
                            self.fill(&connection)?;
                        }
                    }
                    // The SUB task ended: its socket failed. Make it again.
                    None => connection = self.reconnect(node.as_ref()).await?,
                },
                _ = tick.tick() => {
                    let now = Instant::now();
                    if self.slow_until.is_some_and(|until| now >= until) {
                        self.slow_until = None;
                    }
                    for fault in schedule.due(started.elapsed()) {
                        if let Some(new) = self.inject(&fault, node).await? {
                            connection = new;
                        }
                    }
                    self.watch_stopped();
                    self.reap_commands(Duration::ZERO);
                    self.resend(&connection)?;
                    self.fill(&connection)?;
                    if last_progress.elapsed() >= PROGRESS {
                        last_progress = Instant::now();
                        on_progress(&self.progress("running", started));
                    }
                    if last_answer.elapsed() >= self.options.give_up_after {
                        break;
                    }
                }
            }
        }
        let elapsed = started.elapsed();
        on_progress(&self.progress("settling", started));
        // Late copies: a duplicate comes after the first result.
        let until = Instant::now() + self.options.settle;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::select! {
                message = connection.received.recv() => match message {
                    Some(frames) => { self.handle(&frames)?; }
                    None => break,
                },
                () = tokio::time::sleep(left) => break,
            }
        }
        Ok(elapsed)
    }

    /// Handles one published message; `true` for a request's first result.
    fn handle(&mut self, frames: &[Bytes]) -> Result<bool, BenchError> {
        let (Some(envelope), Some(payload)) = (frames.get(1), frames.get(2)) else {
            return Ok(false);
        };
        let Ok(envelope) = Envelope::decode(envelope) else {
            return Ok(false);
        };
        match envelope.kind {
            Kind::Accepted => {
                let ids: Vec<String> = rmp_serde::from_slice(payload).unwrap_or_default();
                for id in &ids {
                    self.checker.accepted(id);
                }
                Ok(false)
            }
            Kind::Result => {
                let code = envelope.error.as_ref().map(|e| e.code);
                if code == Some(ErrorCode::UnknownFlow) && self.checker.answered() == 0 {
                    return Err(BenchError::Invalid(format!(
                        "unknown flow {:?}: the node says {}",
                        self.options.flow,
                        envelope.error.map(|e| e.message).unwrap_or_default()
                    )));
                }
                let ok = envelope.status == Status::Ok;
                let digest = Digest::of(ok, code.map(u16::from), payload);
                let name = envelope.error.as_ref().map(|e| e.name.clone());
                let seen = self.checker.result(&envelope.id, digest, name.as_deref());
                if seen != Seen::First {
                    return Ok(false);
                }
                if let Some(seq) = self.checker.seq_of(&envelope.id) {
                    self.in_flight.remove(&seq);
                    if ok {
                        self.ok_results.insert(seq);
                    }
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Sends new requests while fewer than W are in flight.
    fn fill(&mut self, connection: &Connection) -> Result<(), BenchError> {
        while self.in_flight.len() < self.options.in_flight && self.next_seq < self.options.requests
        {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.in_flight.insert(seq);
            self.send(seq, connection)?;
        }
        Ok(())
    }

    /// Sends request `seq` (again): same id, same payload.
    fn send(&mut self, seq: u64, connection: &Connection) -> Result<(), BenchError> {
        let payload = self.plan.payloads.get(seq).map_err(BenchError::Protocol)?;
        let mut envelope = Envelope::request(self.checker.id(seq), self.options.flow.clone());
        envelope.service.clone_from(&self.service);
        envelope.reply_to.clone_from(&self.reply_to);
        envelope.ack = true;
        envelope.created_us = now_us();
        if let Some(OrderBy::Envelope) = self.plan.order_by {
            envelope.order_key = (seq % self.options.keys).to_string();
        }
        let key = self
            .plan
            .order_by
            .as_ref()
            .and_then(|by| by.key_of(&envelope, &payload).ok());
        let index = usize::try_from(seq).unwrap_or(usize::MAX);
        if connection.push([self.topic.clone(), Bytes::from(envelope.encode()), payload]) {
            self.checker.sent(seq, key);
            if let Some(at) = self.last_sent.get_mut(index) {
                *at = Some(Instant::now());
            }
        }
        Ok(())
    }

    /// Sends again what has waited too long: no acknowledgement within
    /// `resend_after`, or no result within `result_patience`.
    fn resend(&mut self, connection: &Connection) -> Result<(), BenchError> {
        let now = Instant::now();
        let due: Vec<u64> = self
            .in_flight
            .iter()
            .copied()
            .filter(|&seq| {
                let last = self.last_sent[usize::try_from(seq).unwrap_or(0)];
                let patience = if self.checker.is_accepted(seq) {
                    self.options.result_patience
                } else {
                    self.options.resend_after
                };
                last.is_none_or(|at| now.duration_since(at) >= patience)
            })
            .collect();
        for seq in due {
            self.send(seq, connection)?;
        }
        Ok(())
    }

    /// New sockets; what was not acknowledged is sent again at once.
    async fn reconnect(&mut self, node: Option<&Node>) -> Result<Connection, BenchError> {
        let connection = self.connect(node).await?;
        for &seq in &self.in_flight {
            if !self.checker.is_accepted(seq) {
                self.last_sent[usize::try_from(seq).unwrap_or(0)] = None;
            }
        }
        Ok(connection)
    }

    fn random(&mut self, n: usize) -> usize {
        // xorshift64: a fault's victim needs no better randomness.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        usize::try_from(self.rng % n.max(1) as u64).unwrap_or(0)
    }

    /// A worker not stopped by this run, at random.
    fn victim(&mut self, node: Option<&Node>) -> Option<u32> {
        let stopped: Vec<u32> = self.stopped.iter().map(|(pid, _)| *pid).collect();
        let workers: Vec<u32> = node?
            .worker_pids()
            .into_iter()
            .filter(|pid| !stopped.contains(pid))
            .collect();
        if workers.is_empty() {
            return None;
        }
        let i = self.random(workers.len());
        Some(workers[i])
    }

    /// Injects `fault`; a new connection when it made one.
    async fn inject(
        &mut self,
        fault: &Fault,
        node: &mut Option<Node>,
    ) -> Result<Option<Connection>, BenchError> {
        match fault {
            Fault::KillWorker => match self.victim(node.as_ref()) {
                Some(pid) => {
                    process::signal(pid, "KILL");
                    self.faults.worker_kills += 1;
                }
                None => self.faults.skipped += 1,
            },
            Fault::StopWorker => match self.victim(node.as_ref()) {
                Some(pid) => {
                    process::signal(pid, "STOP");
                    self.stopped.push((pid, Instant::now()));
                    self.faults.worker_stops += 1;
                }
                None => self.faults.skipped += 1,
            },
            Fault::KillNode => {
                let Some(old) = node.as_mut() else {
                    return Ok(None);
                };
                old.kill_all();
                self.stopped.clear();
                self.faults.node_kills += 1;
                self.node_starts += 1;
                // The same arguments: the same ipc paths and data directory.
                let restarted = start_node(self.options, self.dir, self.node_starts)?;
                restarted.wait_for_workers(self.plan.workers.unwrap_or(0))?;
                *node = Some(restarted);
                return self.reconnect(node.as_ref()).await.map(Some);
            }
            Fault::SlowSubscriber => {
                self.slow_until = Some(Instant::now() + self.options.slow_for);
                self.faults.slow_subscriber += 1;
            }
            Fault::DropConnection => {
                self.faults.dropped_connections += 1;
                return self.reconnect(node.as_ref()).await.map(Some);
            }
            Fault::Command(command) => {
                self.faults.commands += 1;
                match Command::new("sh")
                    .arg("-c")
                    .arg(command)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                {
                    Ok(child) => self.commands.push(child),
                    Err(_) => self.faults.commands_failed += 1,
                }
            }
        }
        Ok(None)
    }

    /// Kills the workers stopped longer than the node's liveness.
    fn watch_stopped(&mut self) {
        let limit = self.plan.liveness + Duration::from_millis(500);
        self.stopped.retain(|(pid, at)| {
            if at.elapsed() < limit {
                return true;
            }
            process::signal(*pid, "KILL");
            false
        });
    }

    /// Collects the fault commands that ended, waiting up to `limit` for
    /// the others, then killing them.
    fn reap_commands(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let mut failed = 0;
            self.commands.retain_mut(|child| match child.try_wait() {
                Ok(Some(status)) => {
                    failed += u64::from(!status.success());
                    false
                }
                Ok(None) => true,
                Err(_) => {
                    failed += 1;
                    false
                }
            });
            self.faults.commands_failed += failed;
            if self.commands.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !limit.is_zero() {
            for child in &mut self.commands {
                let _ = child.kill();
                let _ = child.wait();
                self.faults.commands_failed += 1;
            }
            self.commands.clear();
        }
    }
}

/// The record file's path as the template's `{record}` gets it.
pub fn record_path(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
