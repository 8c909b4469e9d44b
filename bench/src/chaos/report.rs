//! What a chaos run found: the checker's counts, the faults injected, the
//! action's multiplicity; as a table, and as JSON (`--json`).

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use zmanager::node::duration;

use super::checker::Counts;
use super::record::Multiplicity;
use super::schedule::Planned;

/// Faults injected, by kind.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct FaultCounts {
    pub worker_kills: u64,
    pub worker_stops: u64,
    pub node_kills: u64,
    pub slow_subscriber: u64,
    pub dropped_connections: u64,
    pub commands: u64,
    /// Commands that exited non-zero (or did not start).
    pub commands_failed: u64,
    /// Worker faults due while no worker process ran.
    pub skipped: u64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    pub flow: String,
    pub requests: u64,
    pub in_flight: usize,
    /// `started` (chaos ran the node) or `running` (`--intake`).
    pub node: &'static str,
    pub workers: Option<usize>,
    /// Whether the node's journal was on (known when chaos started it).
    pub journal: Option<bool>,
    pub elapsed_s: f64,
    pub counts: Counts,
    pub faults: FaultCounts,
    /// Absent without `--record-file`.
    pub multiplicity: Option<Multiplicity>,
    /// `--max-runs`, if set.
    pub max_runs_allowed: Option<u64>,
    /// The faults asked for whose first time never came: the load ended
    /// before it, so the run says nothing about them.
    pub never_came: Vec<String>,
    /// Whether the promise held: nothing lost, duplicated, unexpected or
    /// out of order, no action ran more than `--max-runs`, and every fault
    /// asked for came at least once.
    pub clean: bool,
}

impl ChaosReport {
    /// What the exit status says.
    pub fn is_clean(
        counts: &Counts,
        multiplicity: Option<&Multiplicity>,
        max: Option<u64>,
        never_came: &[String],
    ) -> bool {
        let runs_ok = match (multiplicity, max) {
            (Some(m), Some(max)) => m.max_runs <= max,
            _ => true,
        };
        counts.lost == 0
            && counts.duplicated == 0
            && counts.unexpected == 0
            && counts.out_of_order.unwrap_or(0) == 0
            && runs_ok
            && never_came.is_empty()
    }

    /// The planned faults whose first time is after `load` (how long the
    /// load lasted), each as `--kill-node 1s`.
    pub fn never_came(planned: &[Planned], load: Duration) -> Vec<String> {
        planned
            .iter()
            .filter(|p| p.every > load)
            .map(|p| format!("{} {}", p.fault, duration::show(p.every)))
            .collect()
    }

    /// The table `zmanager chaos` prints.
    pub fn render(&self) -> String {
        let c = &self.counts;
        let f = &self.faults;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "zmanager chaos: flow {}, {} requests, {} in flight, node {}{}{}, {:.1} s",
            self.flow,
            self.requests,
            self.in_flight,
            self.node,
            self.workers
                .map_or_else(String::new, |w| format!(", {w} workers")),
            match self.journal {
                Some(true) => ", journal on",
                Some(false) => ", journal OFF (a node kill loses what was in flight)",
                None => "",
            },
            self.elapsed_s
        );
        let _ = writeln!(
            out,
            "faults: {} worker kills, {} worker stops, {} node kills, {} slow-subscriber pauses, \
             {} dropped connections, {} commands ({} failed){}",
            f.worker_kills,
            f.worker_stops,
            f.node_kills,
            f.slow_subscriber,
            f.dropped_connections,
            f.commands,
            f.commands_failed,
            if f.skipped > 0 {
                format!(", {} skipped (no worker running)", f.skipped)
            } else {
                String::new()
            }
        );
        let _ = writeln!(out);
        let row = |out: &mut String, name: &str, value: String, note: &str| {
            let line = format!("{name:<16} {value:>8}  {note}");
            let _ = writeln!(out, "{}", line.trim_end());
        };
        row(&mut out, "sent", c.sent.to_string(), "requests (ids)");
        row(
            &mut out,
            "sent again",
            c.resent.to_string(),
            "same id: no acknowledgement or no result in time",
        );
        row(&mut out, "acknowledged", c.accepted.to_string(), "");
        row(&mut out, "answered", c.answered.to_string(), "");
        row(&mut out, "ok", c.ok.to_string(), "");
        for (code, n) in &c.errors {
            row(&mut out, &format!("error {code}"), n.to_string(), "");
        }
        row(&mut out, "lost", c.lost.to_string(), "sent, never answered");
        row(
            &mut out,
            "duplicated",
            c.duplicated.to_string(),
            "more results than sends, or results that differ",
        );
        row(
            &mut out,
            "republished",
            c.republished.to_string(),
            "a result again for a request sent again (expected)",
        );
        row(
            &mut out,
            "unexpected",
            c.unexpected.to_string(),
            "never sent",
        );
        match c.out_of_order {
            Some(n) => row(&mut out, "out of order", n.to_string(), "per ordering key"),
            None => row(
                &mut out,
                "out of order",
                "-".into(),
                "the flow is not ordered",
            ),
        }
        if let Some(m) = &self.multiplicity {
            let _ = writeln!(out);
            let _ = writeln!(out, "action runs per id (the record file):");
            row(&mut out, "calls", m.calls.to_string(), "recorded");
            row(&mut out, "ids run", m.ids_run.to_string(), "");
            row(&mut out, "max runs", m.max_runs.to_string(), "of one id");
            row(
                &mut out,
                "run > once",
                m.ids_run_more_than_once.to_string(),
                "ids the action ran for more than once (at least once)",
            );
            row(&mut out, "extra runs", m.extra_runs.to_string(), "");
            if m.answered_not_run > 0 {
                row(
                    &mut out,
                    "ok, not run",
                    m.answered_not_run.to_string(),
                    "ok results with no recorded call",
                );
            }
            if m.foreign_lines > 0 {
                row(
                    &mut out,
                    "other lines",
                    m.foreign_lines.to_string(),
                    "naming no request of this run",
                );
            }
            if !m.most_run.is_empty() {
                let listed: Vec<String> = m
                    .most_run
                    .iter()
                    .take(5)
                    .map(|(id, n)| format!("{id} ×{n}"))
                    .collect();
                let _ = writeln!(out, "most run: {}", listed.join(", "));
            }
        }
        if !c.lost_ids.is_empty() {
            let _ = writeln!(out, "lost ids: {}", c.lost_ids.join(", "));
        }
        if !c.duplicated_ids.is_empty() {
            let _ = writeln!(out, "duplicated ids: {}", c.duplicated_ids.join(", "));
        }
        let _ = writeln!(out);
        let verdict = if self.clean {
            "clean: nothing lost, duplicated, unexpected or out of order".to_owned()
        } else {
            let mut why = Vec::new();
            for (n, what) in [
                (c.lost, "lost"),
                (c.duplicated, "duplicated"),
                (c.unexpected, "unexpected"),
                (c.out_of_order.unwrap_or(0), "out of order"),
            ] {
                if n > 0 {
                    why.push(format!("{n} {what}"));
                }
            }
            if let (Some(m), Some(max)) = (&self.multiplicity, self.max_runs_allowed)
                && m.max_runs > max
            {
                why.push(format!(
                    "an action ran {} times for one id (--max-runs {max})",
                    m.max_runs
                ));
            }
            for fault in &self.never_came {
                why.push(format!(
                    "{fault} never came (the load ended after {:.1} s: send more requests, \
                     or fewer at once)",
                    self.elapsed_s
                ));
            }
            format!("FAILED: {}", why.join(", "))
        };
        let _ = writeln!(out, "{verdict}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::schedule::Fault;
    use super::*;

    #[test]
    fn a_fault_due_after_the_load_ended_never_came() {
        let planned = [
            Planned {
                fault: Fault::KillWorker,
                every: Duration::from_millis(250),
            },
            Planned {
                fault: Fault::KillNode,
                every: Duration::from_secs(1),
            },
        ];
        let short = ChaosReport::never_came(&planned, Duration::from_millis(800));
        assert_eq!(short, ["--kill-node 1s"]);
        assert!(ChaosReport::never_came(&planned, Duration::from_secs(1)).is_empty());
        let counts = Counts::default();
        assert!(!ChaosReport::is_clean(&counts, None, None, &short));
        assert!(ChaosReport::is_clean(&counts, None, None, &[]));
    }
}
