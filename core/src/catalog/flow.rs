//! Flows: named, ordered steps of action keys, loaded from INI or TOML.
//!
//! INI, exactly as DigitalPy writes it — a section per flow, a line per step:
//!
//! ```ini
//! [IAMConnection]
//! ?IAMConnection?Push
//! Subject?IAMConnection?Connection
//! ??done
//! ```
//!
//! TOML says the same thing, a table per flow:
//!
//! ```toml
//! [flow.IAMConnection]
//! steps = ["?IAMConnection?Push", "Subject?IAMConnection?Connection", "??done"]
//! ```
//!
//! Step 0 is the flow's entry: the request a service pushes. A flow usually
//! ends with `??done` but need not; without it, the flow ends after its last
//! step. Both formats load into [`Flow`], with the file and line of each step.
//!
//! A flow may be *ordered* (`docs/ordering.md`): requests with the same key
//! are processed one at a time, in the order they were accepted. The key is
//! the envelope's `order_key` or a payload field, named by `order_by` — an
//! `order_by = ...` line in the INI section (the only line of a flow with a
//! value), an `order_by` entry in the TOML table:
//!
//! ```ini
//! [Transfer]
//! order_by = payload.account
//! ?Transfer?Push
//! ?Transfer?debit
//! ??done
//! ```
//!
//! ```toml
//! [flow.Transfer]
//! order_by = "payload.account"
//! steps = ["?Transfer?Push", "?Transfer?debit", "??done"]
//! ```
//!
//! A request names the step it is at (its `key`, the entry step when
//! empty) and the flow runs on from the step after it. It may name step 0
//! and the steps its flow marks as *entry points* — `entry = KEY` lines in
//! the INI section, an `entry = [...]` list in the TOML table — and no
//! other: a step a service could name could skip the steps before it (an
//! authorization step, say). The node's own replay tools may resume at any
//! step (`docs/security.md`).
//!
//! ```ini
//! [Greeting]
//! entry = ?Greeting?trim
//! ?Greeting?Push
//! ?Greeting?trim
//! ?Greeting?greet
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::catalog::action_key::{ActionKey, is_field_char};
use crate::catalog::diagnostic::{Diagnostics, Location};
use crate::catalog::ini;
use crate::ordering::OrderBy;

/// A flow: its name, where it is defined, and its steps in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub name: String,
    pub location: Location,
    pub steps: Vec<Step>,
    /// Where its ordering key is read; `None` for an unordered flow.
    pub order_by: Option<OrderBy>,
    /// The steps other than step 0 that a request may name (indices, in
    /// order).
    pub entries: Vec<usize>,
}

/// One step of a flow and the line that defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub key: ActionKey,
    pub location: Location,
}

impl Flow {
    /// The index of the first step that, used as a pattern, matches `key`
    /// (see [`ActionKey::matches`]).
    pub fn position(&self, key: &ActionKey) -> Option<usize> {
        self.steps.iter().position(|step| step.key.matches(key))
    }

    /// True when a request may name step `position`: step 0, or a step
    /// the flow marks as an entry point.
    pub fn is_entry(&self, position: usize) -> bool {
        position == 0 || self.entries.contains(&position)
    }

    /// The step after the one matching `key`; `None` after the last step or
    /// when no step matches.
    pub fn next_step(&self, key: &ActionKey) -> Option<&Step> {
        self.position(key).and_then(|i| self.steps.get(i + 1))
    }

    fn push_step(&mut self, text: &str, location: Location, diagnostics: &mut Diagnostics) {
        match ActionKey::parse(text) {
            Ok(key) => {
                if let Some(first) = self.steps.iter().find(|s| s.key == key) {
                    diagnostics.error(
                        location,
                        format!(
                            "step `{key}` appears twice in flow {} (first at line {})",
                            self.name, first.location.line
                        ),
                    );
                } else {
                    self.steps.push(Step { key, location });
                }
            }
            Err(e) => diagnostics.error(location, format!("malformed action key {text:?}: {e}")),
        }
    }

    fn set_order_by(&mut self, text: &str, location: Location, diagnostics: &mut Diagnostics) {
        if self.order_by.is_some() {
            diagnostics.error(location, format!("flow {} has order_by twice", self.name));
            return;
        }
        match OrderBy::parse(text) {
            Ok(by) => self.order_by = Some(by),
            Err(e) => diagnostics.error(location, format!("flow {}: {e}", self.name)),
        }
    }

    /// Marks the steps that `entries` name as entry points, once every
    /// step is known; a name that is no step of the flow is an error.
    fn mark_entries(&mut self, entries: Vec<(String, Location)>, diagnostics: &mut Diagnostics) {
        for (text, location) in entries {
            let key = match ActionKey::parse(&text) {
                Ok(key) => key,
                Err(e) => {
                    diagnostics.error(location, format!("malformed entry key {text:?}: {e}"));
                    continue;
                }
            };
            match self.steps.iter().position(|s| s.key == key) {
                Some(0) => {}
                Some(i) if self.entries.contains(&i) => diagnostics.error(
                    location,
                    format!("entry `{key}` is marked twice in flow {}", self.name),
                ),
                Some(i) => self.entries.push(i),
                None => diagnostics.error(
                    location,
                    format!("entry `{key}` is not a step of flow {}", self.name),
                ),
            }
        }
        self.entries.sort_unstable();
    }
}

/// Checks a flow name: it is the first part of every topic of the flow.
fn check_name(name: &str, location: &Location, diagnostics: &mut Diagnostics) {
    if let Some(ch) = name.chars().find(|&ch| !is_field_char(ch)) {
        diagnostics.error(
            location.clone(),
            format!("flow name {name:?} contains {ch:?}; use letters, digits, `_`, `-` and `.`"),
        );
    }
}

/// Loads the flows of a DigitalPy-style INI file.
pub fn load_ini(file: &Arc<str>, text: &str, diagnostics: &mut Diagnostics) -> Vec<Flow> {
    ini::parse(file, text, diagnostics)
        .into_iter()
        .map(|section| {
            let location = Location::new(file, section.line);
            check_name(&section.name, &location, diagnostics);
            let mut flow = Flow {
                name: section.name,
                location,
                steps: Vec::new(),
                order_by: None,
                entries: Vec::new(),
            };
            let mut entries = Vec::new();
            for entry in section.entries {
                let at = Location::new(file, entry.line);
                if entry.key == "entry" {
                    match entry.value {
                        Some(value) => entries.push((value, at)),
                        None => diagnostics.error(
                            at,
                            "entry has no value (expected `entry = <the key of a step>`)",
                        ),
                    }
                    continue;
                }
                if entry.key == "order_by" {
                    match entry.value.as_deref() {
                        Some(value) => flow.set_order_by(value, at, diagnostics),
                        None => diagnostics.error(
                            at,
                            "order_by has no value (expected `order_by = envelope` or `order_by = payload.<field>`)",
                        ),
                    }
                    continue;
                }
                if entry.value.is_some() {
                    diagnostics.error(
                        at,
                        format!(
                            "flow step {:?} has a value; a flow step is an action key alone",
                            entry.key
                        ),
                    );
                    continue;
                }
                flow.push_step(&entry.key, at, diagnostics);
            }
            flow.mark_entries(entries, diagnostics);
            flow
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowFile {
    #[serde(default)]
    flow: BTreeMap<toml::Spanned<String>, FlowTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowTable {
    steps: Vec<toml::Spanned<String>>,
    #[serde(default)]
    order_by: Option<toml::Spanned<String>>,
    #[serde(default)]
    entry: Vec<toml::Spanned<String>>,
}

/// Loads the flows of a TOML file (`[flow.Name] steps = [...]`).
pub fn load_toml(file: &Arc<str>, text: &str, diagnostics: &mut Diagnostics) -> Vec<Flow> {
    let parsed: FlowFile = match toml::from_str(text) {
        Ok(parsed) => parsed,
        Err(e) => {
            diagnostics.toml_error(file, text, &e);
            return Vec::new();
        }
    };
    let mut flows: Vec<Flow> = parsed
        .flow
        .into_iter()
        .map(|(name, table)| {
            let location = Location::at_offset(file, text, name.span().start);
            let name = name.into_inner();
            check_name(&name, &location, diagnostics);
            let mut flow = Flow {
                name,
                location,
                steps: Vec::new(),
                order_by: None,
                entries: Vec::new(),
            };
            for step in table.steps {
                let at = Location::at_offset(file, text, step.span().start);
                flow.push_step(step.get_ref(), at, diagnostics);
            }
            let entries = table
                .entry
                .into_iter()
                .map(|e| {
                    let at = Location::at_offset(file, text, e.span().start);
                    (e.into_inner(), at)
                })
                .collect();
            flow.mark_entries(entries, diagnostics);
            if let Some(by) = table.order_by {
                let at = Location::at_offset(file, text, by.span().start);
                flow.set_order_by(by.get_ref(), at, diagnostics);
            }
            flow
        })
        .collect();
    flows.sort_by_key(|f| f.location.line);
    flows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ini(text: &str) -> (Vec<Flow>, Diagnostics) {
        let mut d = Diagnostics::default();
        (load_ini(&Arc::from("f.ini"), text, &mut d), d)
    }

    fn toml(text: &str) -> (Vec<Flow>, Diagnostics) {
        let mut d = Diagnostics::default();
        (load_toml(&Arc::from("f.toml"), text, &mut d), d)
    }

    fn key(text: &str) -> ActionKey {
        ActionKey::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    const IAM_INI: &str = "\
[IAMConnection]
?IAMConnection?Push
Subject?IAMConnection?Connection
??done
";

    const IAM_TOML: &str = "\
[flow.IAMConnection]
steps = [
  \"?IAMConnection?Push\",
  \"Subject?IAMConnection?Connection\",
  \"??done\",
]
";

    #[test]
    fn three_step_section_has_three_steps() {
        let (flows, d) = ini(IAM_INI);
        assert!(d.is_empty(), "{d}");
        assert_eq!(flows.len(), 1);
        assert_eq!(flows[0].name, "IAMConnection");
        assert_eq!(flows[0].steps.len(), 3);
        let lines: Vec<u32> = flows[0].steps.iter().map(|s| s.location.line).collect();
        assert_eq!(lines, [2, 3, 4]);
    }

    #[test]
    fn empty_section_has_no_steps() {
        let (flows, d) = ini("[Empty]\n; nothing here\n\n[Other]\n??done\n");
        assert!(d.is_empty(), "{d}");
        assert_eq!(flows[0].steps.len(), 0);
        assert_eq!(flows[1].steps.len(), 1);
    }

    #[test]
    fn toml_says_the_same_as_ini() {
        let (from_ini, _) = ini(IAM_INI);
        let (from_toml, d) = toml(IAM_TOML);
        assert!(d.is_empty(), "{d}");
        let keys = |flows: &[Flow]| -> Vec<String> {
            flows[0].steps.iter().map(|s| s.key.to_string()).collect()
        };
        assert_eq!(keys(&from_ini), keys(&from_toml));
        assert_eq!(from_toml[0].name, from_ini[0].name);
        let lines: Vec<u32> = from_toml[0].steps.iter().map(|s| s.location.line).collect();
        assert_eq!(lines, [3, 4, 5]);
        assert_eq!(from_toml[0].location.line, 1);
    }

    #[test]
    fn digitalpy_core_flows_excerpt_loads() {
        let (flows, d) = ini("\
[UPDATE_ROUTING_WORKERS]
?updateRoutingWorkers@ROUTING_WORKER?Publish
IntegrationManager?updateRoutingWorkers@ROUTING_WORKER?update

; service management flows
[ServiceManagement_GetServiceTopics]
?ServiceManagement_GetServiceTopics?Push
Subject?ServiceManagement__GetServiceTopics@PUBLISH?get_service_topics
?ServiceManagement__GetServiceTopics@ASYNC?get_service_topics_response
??done
");
        assert!(d.is_empty(), "{d}");
        assert_eq!(flows.len(), 2);
        assert_eq!(flows[0].steps.len(), 2);
        assert_eq!(flows[1].steps.len(), 4);
    }

    #[test]
    fn next_step_uses_wildcards_and_ends_after_last() {
        let (flows, _) = ini(IAM_INI);
        let flow = &flows[0];
        let next = flow
            .next_step(&key("svc?IAMConnection?Push"))
            .map(|s| &s.key);
        assert_eq!(next, Some(&key("Subject?IAMConnection?Connection")));
        let next = flow
            .next_step(&key("Subject?IAMConnection?Connection"))
            .map(|s| &s.key);
        assert_eq!(next, Some(&key("??done")));
        assert_eq!(flow.next_step(&key("??done")), None);
        assert_eq!(flow.next_step(&key("?Other?Push")), None);
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let (flows, d) = ini("[F]\n?F?Push\nbad key\n?F?Push\n?F?x = y\n[Bad~Name]\n??done\n");
        let lines: Vec<u32> = d.errors().map(|e| e.location.line).collect();
        assert_eq!(lines, [3, 4, 5, 6], "{d}");
        assert_eq!(flows[0].steps.len(), 1);
        let text = d.to_string();
        assert!(
            text.contains("f.ini:3: error: malformed action key \"bad key\""),
            "{text}"
        );
        assert!(
            text.contains("appears twice in flow F (first at line 2)"),
            "{text}"
        );
        assert!(text.contains("has a value"), "{text}");
        assert!(
            text.contains("flow name \"Bad~Name\" contains '~'"),
            "{text}"
        );
    }

    #[test]
    fn order_by_in_ini_and_toml() {
        let (flows, d) = ini("[T]\norder_by = payload.account\n?T?Push\n??done\n[U]\n?U?Push\n");
        assert!(d.is_empty(), "{d}");
        assert_eq!(
            flows[0].order_by,
            Some(OrderBy::Payload(vec!["account".into()]))
        );
        assert_eq!(flows[0].steps.len(), 2);
        assert_eq!(flows[1].order_by, None);
        let (flows, d) =
            toml("[flow.T]\norder_by = \"envelope\"\nsteps = [\"?T?Push\", \"??done\"]\n");
        assert!(d.is_empty(), "{d}");
        assert_eq!(flows[0].order_by, Some(OrderBy::Envelope));
    }

    #[test]
    fn bad_order_by_is_reported_with_its_line() {
        let (_, d) = ini(
            "[T]\n?T?Push\norder_by = account\norder_by\n[U]\norder_by = envelope\norder_by = envelope\n",
        );
        let lines: Vec<u32> = d.errors().map(|e| e.location.line).collect();
        assert_eq!(lines, [3, 4, 7], "{d}");
        let text = d.to_string();
        assert!(
            text.contains("must be `envelope` or `payload.<field>`"),
            "{text}"
        );
        assert!(text.contains("order_by has no value"), "{text}");
        assert!(text.contains("flow U has order_by twice"), "{text}");
        let (_, d) = toml("[flow.T]\nsteps = [\"?T?Push\"]\norder_by = \"payload.\"\n");
        let e: Vec<_> = d.errors().collect();
        assert_eq!((e.len(), e[0].location.line), (1, 3), "{d}");
    }

    #[test]
    fn toml_errors_have_lines() {
        let (_, d) = toml("[flow.F]\nsteps = [\"?F?Push\", \"a?b\"]\n");
        let e: Vec<_> = d.errors().collect();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].location.line, 2);
        let (_, d) = toml("[flow.F]\nstep = []\n");
        let e: Vec<_> = d.errors().collect();
        assert_eq!(e.len(), 1, "{d}");
        assert_eq!(e[0].location.line, 2, "{d}");
        assert!(e[0].message.contains("step"), "{d}");
    }

    #[test]
    fn entry_points_in_ini_and_toml() {
        let (flows, d) = ini(
            "[G]\nentry = ?G?Trimmed\n?G?Push\n?G?trim\n?G?Trimmed\n?G?greet\nentry = ?G?Push\n",
        );
        assert!(d.is_empty(), "{d}");
        assert_eq!(flows[0].entries, [2]);
        let is_entry: Vec<bool> = (0..4).map(|i| flows[0].is_entry(i)).collect();
        assert_eq!(is_entry, [true, false, true, false]);
        let (flows, d) = toml(
            "[flow.G]\nsteps = [\"?G?Push\", \"?G?a\", \"?G?b\", \"?G?c\"]\nentry = [\"?G?c\", \"?G?b\"]\n",
        );
        assert!(d.is_empty(), "{d}");
        assert_eq!(flows[0].entries, [2, 3]);
        let (flows, _) = ini("[F]\n?F?Push\n?F?a\n");
        assert_eq!(flows[0].entries, Vec::<usize>::new());
        assert!(flows[0].is_entry(0) && !flows[0].is_entry(1));
    }

    #[test]
    fn bad_entry_points_are_reported_with_their_lines() {
        let (flows, d) = ini(
            "[F]\n?F?Push\n?F?a\nentry = ?F?nope\nentry\nentry = bad key\nentry = ?F?a\nentry = ?F?a\n",
        );
        let lines: Vec<u32> = d.errors().map(|e| e.location.line).collect();
        assert_eq!(lines, [5, 4, 6, 8], "{d}");
        let text = d.to_string();
        assert!(
            text.contains("entry `?F?nope` is not a step of flow F"),
            "{text}"
        );
        assert!(text.contains("entry has no value"), "{text}");
        assert!(text.contains("malformed entry key \"bad key\""), "{text}");
        assert!(text.contains("entry `?F?a` is marked twice"), "{text}");
        assert_eq!(flows[0].entries, [1]);
        let (_, d) = toml("[flow.T]\nsteps = [\"?T?Push\"]\nentry = [\"?T?x\"]\n");
        let e: Vec<_> = d.errors().collect();
        assert_eq!((e.len(), e[0].location.line), (1, 3), "{d}");
    }
}
