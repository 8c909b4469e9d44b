//! What a reload changes: flows added and removed, and in each flow kept,
//! the steps whose key or role (what performs them) changed, were added
//! or were removed, by position.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use crate::catalog::{Catalog, RoutedFlow, StepRole};

/// The changes from one catalog to another.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub flows_added: Vec<String>,
    pub flows_removed: Vec<String>,
    pub flows_changed: Vec<FlowChange>,
}

/// A flow kept, with its steps changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowChange {
    pub flow: String,
    /// One line per step changed: `step 2 ?F?x: Probe.echo -> Text.upper`.
    pub steps: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.flows_added.is_empty()
            && self.flows_removed.is_empty()
            && self.flows_changed.is_empty()
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "no flow or step changed");
        }
        let mut parts = Vec::new();
        if !self.flows_added.is_empty() {
            parts.push(format!("flows added: {}", self.flows_added.join(", ")));
        }
        if !self.flows_removed.is_empty() {
            parts.push(format!("flows removed: {}", self.flows_removed.join(", ")));
        }
        for change in &self.flows_changed {
            parts.push(format!("{}: {}", change.flow, change.steps.join("; ")));
        }
        write!(f, "{}", parts.join("; "))
    }
}

/// What performs a step, as said in a change.
fn role(role: Option<&StepRole>) -> String {
    match role {
        Some(StepRole::Entry) => "entry".into(),
        Some(StepRole::Done) => "done".into(),
        Some(StepRole::Publish) => "@PUBLISH".into(),
        Some(StepRole::Async) => "@ASYNC".into(),
        Some(StepRole::Service(name)) => format!("service {name}"),
        Some(StepRole::Action(target)) => target.to_string(),
        Some(StepRole::Unresolved) | None => "nothing".into(),
    }
}

fn steps(flow: &RoutedFlow) -> Vec<(String, String)> {
    flow.flow
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.key.to_string(), role(flow.roles.get(i).map(|(r, _)| r))))
        .collect()
}

/// The changes from `old` to `new`.
pub fn between(old: &Catalog, new: &Catalog) -> Changes {
    let before: BTreeSet<&String> = old.flows.keys().collect();
    let after: BTreeSet<&String> = new.flows.keys().collect();
    let mut changes = Changes {
        flows_added: after.difference(&before).map(|s| (*s).clone()).collect(),
        flows_removed: before.difference(&after).map(|s| (*s).clone()).collect(),
        flows_changed: Vec::new(),
    };
    for name in before.intersection(&after) {
        let (a, b) = (steps(&old.flows[*name]), steps(&new.flows[*name]));
        let mut lines = Vec::new();
        for i in 0..a.len().max(b.len()) {
            match (a.get(i), b.get(i)) {
                (Some(x), Some(y)) if x == y => {}
                (Some((kx, rx)), Some((ky, ry))) if kx == ky => {
                    lines.push(format!("step {i} {kx}: {rx} -> {ry}"));
                }
                (Some((kx, rx)), Some((ky, ry))) => {
                    lines.push(format!("step {i}: {kx} ({rx}) -> {ky} ({ry})"));
                }
                (None, Some((ky, ry))) => lines.push(format!("step {i} added: {ky} ({ry})")),
                (Some((kx, rx)), None) => lines.push(format!("step {i} removed: {kx} ({rx})")),
                (None, None) => {}
            }
        }
        if !lines.is_empty() {
            changes.flows_changed.push(FlowChange {
                flow: (*name).clone(),
                steps: lines,
            });
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::source::{Format, SourceFile};

    fn catalog(flows: &str, mappings: &str) -> Catalog {
        let (catalog, diagnostics) = Catalog::build(
            &[SourceFile::new("f.ini", flows, Format::Ini)],
            &[SourceFile::new("m.ini", mappings, Format::Ini)],
        );
        assert!(!diagnostics.has_errors(), "{diagnostics}");
        catalog
    }

    #[test]
    fn added_removed_and_changed_steps_are_named() {
        let old = catalog(
            "[A]\n?A?Push\n?A?x\n??done\n[B]\n?B?Push\n??done\n",
            "[actionmapping]\n?A?x = Echo.echo\n",
        );
        let new = catalog(
            "[A]\n?A?Push\n?A?x\n?A?y\n??done\n[C]\n?C?Push\n??done\n",
            "[actionmapping]\n?A?x = Text.upper\n?A?y = Echo.echo\n",
        );
        let c = between(&old, &new);
        assert_eq!(c.flows_added, ["C"]);
        assert_eq!(c.flows_removed, ["B"]);
        assert_eq!(c.flows_changed.len(), 1);
        assert_eq!(
            c.flows_changed[0].steps,
            [
                "step 1 ?A?x: Echo.echo -> Text.upper",
                "step 2: ??done (done) -> ?A?y (Echo.echo)",
                "step 3 added: ??done (done)",
            ]
        );
        assert!(between(&new, &new).is_empty());
        assert_eq!(between(&new, &new).to_string(), "no flow or step changed");
    }
}
