//! DigitalPy's node configuration, `configuration_management.ini`, read into
//! zmanager's node settings.
//!
//! DigitalPy's configuration factory builds one object per section from
//! its `__class` (`ConfigurationFactory._initialize_generic_configuration_object`),
//! setting only the attributes that class declares: a key it does not
//! know is ignored. `[ZManagerConfiguration]` (`ZManagerConfiguration`,
//! read by `Subject`, `IntegrationManager`, `DefaultRoutingWorker`) holds:
//!
//! | DigitalPy | what it does there | here |
//! |---|---|---|
//! | `subject_pull_address` | the Subject's PULL: services push requests | `[endpoints] intake` |
//! | `subject_push_address` | the Subject's PUSH: workers pull work | `[endpoints] workers` |
//! | `integration_manager_pub_address` | the IM's PUB: services subscribe | `[endpoints] publish` |
//! | `worker_count` | worker processes the Subject forks | `workers` |
//! | `integration_manager_pull_address` | the IM's PULL: workers (and services) push results | none: results come back on the workers socket, services push to the intake |
//! | `*_sndhwm`, `*_rcvhwm` | high-water marks (0: unbounded) | none: every queue is bounded (`max_pending`, `max_pending_mb`…) |
//! | `subject_pull_timeout`, `integration_manager_pull_timeout`, `worker_timeout`, `subject_push_timeout` | how long a socket blocks before checking whether to stop (ms) | none: stopping is by cancellation, draining by `drain_timeout` |
//! | `subject_push_heartbeat_ivl`, `_timeout`, `_ttl` | declared, read by no socket in 0.3.16 | none: `heartbeat`, `liveness` |
//!
//! `localhost` in an address becomes `127.0.0.1` (the address the node
//! binds must be one libzmq binds to, and one `zmanager up` knows is
//! loopback). The other sections: `[ComponentManagementConfiguration]`
//! (where Python components are installed from), the network services of
//! the service manager (a section whose `__class` is a
//! `ServiceConfiguration`, listed by `[ServiceManagementConfiguration]
//! services`) — none is carried over; each gets a note, or a warning when
//! something the application runs would be missing.

use std::sync::Arc;

use crate::catalog::diagnostic::{Diagnostics, Location};
use crate::catalog::ini;
use crate::catalog::source::SourceFile;
use crate::node::config::{Endpoints, NodeConfig};

/// A value carried over: zmanager's setting, and what DigitalPy wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    /// `workers`, `endpoints.intake`…
    pub setting: &'static str,
    /// Where and what: `configuration_management.ini:18 worker_count = 3`.
    pub from: String,
}

/// What `configuration_management.ini` gives a zmanager node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    pub file: Arc<str>,
    /// zmanager's defaults where DigitalPy's file says nothing (they are
    /// DigitalPy's ports).
    pub endpoints: Endpoints,
    pub workers: Option<usize>,
    pub carried: Vec<Carried>,
    /// What was not carried over, a line each (for the imported file's
    /// comments).
    pub dropped: Vec<String>,
}

/// Settings of `[ZManagerConfiguration]` that have no counterpart, by why.
const NO_SOCKET: &[&str] = &["integration_manager_pull_address"];
const WATER_MARKS: &[&str] = &[
    "integration_manager_pub_sndhwm",
    "integration_manager_pull_rcvhwm",
];
const TIMEOUTS: &[&str] = &[
    "subject_pull_timeout",
    "integration_manager_pull_timeout",
    "worker_timeout",
    "subject_push_timeout",
];
const HEARTBEATS: &[&str] = &[
    "subject_push_heartbeat_ivl",
    "subject_push_heartbeat_timeout",
    "subject_push_heartbeat_ttl",
];

/// `tcp://localhost:19030` as zmanager binds it; an error for a transport
/// zmanager does not listen on.
fn endpoint(value: &str) -> Result<String, String> {
    if let Some(rest) = value.strip_prefix("tcp://") {
        return Ok(match rest.strip_prefix("localhost:") {
            Some(port) => format!("tcp://127.0.0.1:{port}"),
            None => value.to_owned(),
        });
    }
    if value.starts_with("ipc://") {
        return Ok(value.to_owned());
    }
    Err(format!(
        "{value:?}: not supported: a zmanager node listens on tcp:// and ipc:// endpoints only"
    ))
}

/// A whole number as DigitalPy reads one (`int(float("3"))`: `3` and
/// `3.0` alike).
fn whole(value: &str) -> Option<u64> {
    let number: f64 = value.trim().parse().ok()?;
    (number >= 0.0 && number.fract() == 0.0 && number < 1e15).then_some(number as u64)
}

/// Reads `configuration_management.ini`. Values DigitalPy could not use
/// either are errors with their line; what has no meaning here is a note.
pub fn read(file: &SourceFile, diagnostics: &mut Diagnostics) -> NodeSettings {
    let name = &file.name;
    let mut out = NodeSettings {
        file: Arc::clone(name),
        endpoints: Endpoints::default(),
        workers: None,
        carried: Vec::new(),
        dropped: Vec::new(),
    };
    let mut saw_zmanager = false;
    for section in ini::parse(name, &file.text, diagnostics) {
        let at = Location::new(name, section.line);
        let class = section
            .entries
            .iter()
            .find(|e| e.key == "__class")
            .and_then(|e| e.value.clone())
            .unwrap_or_default();
        match section.name.as_str() {
            "ZManagerConfiguration" => {
                saw_zmanager = true;
                zmanager_section(name, &section, &class, &mut out, diagnostics);
            }
            "ComponentManagementConfiguration" => {
                diagnostics.note(
                    at,
                    "[ComponentManagementConfiguration] not carried over: DigitalPy installs Python components at run time from the paths it gives; a zmanager node links its components or loads their shared libraries at start (`components` in node.toml)",
                );
                out.dropped.push("[ComponentManagementConfiguration]: components are linked, or loaded at start (`components`)".into());
            }
            "ServiceManagementConfiguration" => {
                let services = value_of(&section, "services").unwrap_or_default();
                diagnostics.note(
                    at,
                    format!("[ServiceManagementConfiguration] services = {services}: the network services DigitalPy's service manager starts (each has its own section)"),
                );
            }
            _ if class.ends_with(".ServiceConfiguration") => {
                let field = |key: &str| value_of(&section, key).unwrap_or_else(|| "?".into());
                diagnostics.warning(
                    at,
                    format!(
                        "not supported: network service [{}] ({} on {}:{}, status {}): DigitalPy's service manager runs it; a zmanager node does not. Its HTTP gateway serves every flow at /v1/flows/<flow>/requests ([http] in node.toml, docs/http.md), and a service of your own connects to the intake and publish endpoints (docs/protocol.md)",
                        section.name,
                        field("protocol"),
                        field("host"),
                        field("port"),
                        field("status"),
                    ),
                );
                out.dropped.push(format!(
                    "[{}]: a DigitalPy network service, not supported (use [http], docs/http.md)",
                    section.name
                ));
            }
            other => {
                diagnostics.note(at, format!("[{other}] not read: no meaning here"));
                out.dropped.push(format!("[{other}]: not read"));
            }
        }
    }
    if !saw_zmanager {
        diagnostics.warning(
            Location::new(name, 0),
            "no [ZManagerConfiguration] section: the node gets zmanager's defaults (DigitalPy's ports, one worker per core)",
        );
    }
    out
}

fn value_of(section: &ini::Section, key: &str) -> Option<String> {
    section
        .entries
        .iter()
        .rev()
        .find(|e| e.key == key)
        .and_then(|e| e.value.clone())
}

fn zmanager_section(
    name: &Arc<str>,
    section: &ini::Section,
    class: &str,
    out: &mut NodeSettings,
    diagnostics: &mut Diagnostics,
) {
    if !class.is_empty() && !class.ends_with(".ZManagerConfiguration") {
        diagnostics.warning(
            Location::new(name, section.line),
            format!("__class = {class}: another class than DigitalPy's ZManagerConfiguration; its settings are read as DigitalPy's"),
        );
    }
    // Keys without a counterpart, grouped by why, with the first line.
    let mut groups: [(&[&str], Vec<&str>, u32); 4] = [
        (NO_SOCKET, Vec::new(), 0),
        (WATER_MARKS, Vec::new(), 0),
        (TIMEOUTS, Vec::new(), 0),
        (HEARTBEATS, Vec::new(), 0),
    ];
    for entry in &section.entries {
        let location = Location::new(name, entry.line);
        let key = entry.key.as_str();
        if key == "__class" {
            continue;
        }
        let Some(value) = entry.value.as_deref().filter(|v| !v.is_empty()) else {
            diagnostics.warning(
                location,
                format!("{key} has no value; DigitalPy skips such a line"),
            );
            continue;
        };
        let from = format!("{}:{} {key} = {value}", name, entry.line);
        let carry = |setting: &'static str, out: &mut NodeSettings| {
            out.carried.retain(|c| c.setting != setting);
            out.carried.push(Carried {
                setting,
                from: from.clone(),
            });
        };
        match key {
            "subject_pull_address" | "subject_push_address" | "integration_manager_pub_address" => {
                match endpoint(value) {
                    Ok(at) => {
                        let (setting, slot) = match key {
                            "subject_pull_address" => ("endpoints.intake", &mut out.endpoints.intake),
                            "subject_push_address" => ("endpoints.workers", &mut out.endpoints.workers),
                            _ => ("endpoints.publish", &mut out.endpoints.publish),
                        };
                        *slot = at;
                        carry(setting, out);
                    }
                    Err(e) => diagnostics.error(location, format!("{key} = {e}")),
                }
            }
            "worker_count" => match whole(value).and_then(|n| usize::try_from(n).ok()) {
                Some(n) => {
                    out.workers = Some(n);
                    carry("workers", out);
                }
                None => diagnostics.error(
                    location,
                    format!("worker_count = {value:?} is not a whole number (DigitalPy's int() refuses it too)"),
                ),
            },
            _ => match groups.iter_mut().find(|(keys, _, _)| keys.contains(&key)) {
                Some((_, seen, line)) => {
                    if whole(value).is_none() && !NO_SOCKET.contains(&key) {
                        diagnostics.error(
                            location,
                            format!("{key} = {value:?} is not a whole number (DigitalPy's int() refuses it too)"),
                        );
                    }
                    if seen.is_empty() {
                        *line = entry.line;
                    }
                    seen.push(entry.key.as_str());
                }
                None => diagnostics.warning(
                    location,
                    format!("{key} is not a ZManagerConfiguration setting: DigitalPy ignores it, and so does zmanager"),
                ),
            },
        }
    }
    let why = [
        "no such socket here: workers return results on the workers socket, and a service sends everything to the intake (docs/protocol.md)",
        "DigitalPy's high-water marks (0: unbounded); zmanager bounds every queue itself (max_pending, max_pending_mb, each subscriber's own bounds)",
        "how long DigitalPy's sockets block before checking whether to stop (ms); a zmanager node stops by cancellation and drains for drain_timeout",
        "declared by DigitalPy's ZManagerConfiguration, read by none of its sockets (0.3.16); zmanager's heartbeat and liveness are `heartbeat` and `liveness` in node.toml",
    ];
    for ((_, keys, line), why) in groups.iter().zip(why) {
        if keys.is_empty() {
            continue;
        }
        let keys = keys.join(", ");
        diagnostics.note(
            Location::new(name, *line),
            format!("{keys}: not carried over: {why}"),
        );
        out.dropped.push(format!("{keys}: {why}"));
    }
    let exposed = |v: &str| {
        let all = Endpoints {
            intake: v.to_owned(),
            workers: v.to_owned(),
            publish: v.to_owned(),
        };
        !all.exposed().is_empty()
    };
    for (setting, value) in [
        ("endpoints.intake", &out.endpoints.intake),
        ("endpoints.workers", &out.endpoints.workers),
        ("endpoints.publish", &out.endpoints.publish),
    ] {
        if out.carried.iter().any(|c| c.setting == setting) && exposed(value) {
            diagnostics.warning(
                Location::new(name, section.line),
                format!("{setting} = {value} listens beyond this machine: `zmanager up` refuses it without [security] keys or --insecure (docs/security.md)"),
            );
        }
    }
}

/// A TOML string literal.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

impl NodeSettings {
    /// Sets what DigitalPy's file gave on `config`.
    pub fn apply(&self, config: &mut NodeConfig) {
        config.endpoints = self.endpoints.clone();
        if self.workers.is_some() {
            config.workers = self.workers;
        }
    }

    /// The node's configuration as TOML: the carried values, each with a
    /// comment saying where it comes from, the catalog directories, and
    /// `header` and what was dropped as comments.
    pub fn to_toml(&self, header: &[String], flows: &str, mappings: &str) -> String {
        let mut out = String::new();
        out.push_str("# A zmanager node imported from DigitalPy by `zmanager import-digitalpy`.\n");
        for line in header {
            out.push_str(&format!("# {line}\n"));
        }
        if !self.dropped.is_empty() {
            out.push_str("#\n# Not carried over (docs/digitalpy.md says why):\n");
            for line in &self.dropped {
                out.push_str(&format!("# - {line}\n"));
            }
        }
        let from = |setting: &str| {
            self.carried
                .iter()
                .find(|c| c.setting == setting)
                .map_or_else(
                    || "  # zmanager's default (DigitalPy's file has none)".to_owned(),
                    |c| format!("  # {}", c.from),
                )
        };
        out.push('\n');
        match self.workers {
            Some(n) => out.push_str(&format!("workers = {n}{}\n", from("workers"))),
            None => {
                out.push_str("# workers: one per core (DigitalPy's file has no worker_count)\n")
            }
        }
        out.push_str("\n[endpoints]\n");
        for (key, value) in [
            ("intake", &self.endpoints.intake),
            ("workers", &self.endpoints.workers),
            ("publish", &self.endpoints.publish),
        ] {
            out.push_str(&format!(
                "{key} = {}{}\n",
                quoted(value),
                from(&format!("endpoints.{key}"))
            ));
        }
        out.push_str(&format!(
            "\n[catalog]\nflows = {}\nmappings = {}\n",
            quoted(flows),
            quoted(mappings)
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::source::Format;

    const DEFAULT: &str = "\
[ZManagerConfiguration]
__class = digitalpy.core.zmanager.domain.model.zmanager_configuration.ZManagerConfiguration
integration_manager_pub_address = tcp://localhost:19034
integration_manager_pub_sndhwm = 0

integration_manager_pull_address = tcp://localhost:19035
integration_manager_pull_rcvhwm = 0
integration_manager_pull_timeout = 2000

subject_pull_address = tcp://localhost:19030
subject_pull_timeout = 2000

subject_push_address = tcp://localhost:19031
subject_push_heartbeat_ivl = 1000
subject_push_heartbeat_timeout = 3000
subject_push_heartbeat_ttl = 3000
subject_push_timeout = 2000

worker_count = 3
worker_timeout = 3000

[ComponentManagementConfiguration]
__class = digitalpy.core.component_management.domain.model.component_management_configuration.ComponentManagementConfiguration

[digitalpy.core_api]
__class = digitalpy.core.service_management.domain.model.service_configuration.ServiceConfiguration
status = RUNNING
name = DigitalPyCoreAPI
port = 8080
host = 0.0.0.0
protocol = FlaskHTTPNetworkBlueprints
flows = [A, B]

[ServiceManagementConfiguration]
__class = digitalpy.core.service_management.domain.model.service_management_configuration.ServiceManagementConfiguration
services = [digitalpy.core_api]
";

    fn read_text(text: &str) -> (NodeSettings, Diagnostics) {
        let mut d = Diagnostics::default();
        let file = SourceFile::new("configuration_management.ini", text, Format::Ini);
        (read(&file, &mut d), d.sorted())
    }

    #[test]
    fn digitalpy_defaults_give_its_ports_and_worker_count() {
        let (node, d) = read_text(DEFAULT);
        assert!(!d.has_errors(), "{d}");
        assert_eq!(node.workers, Some(3));
        assert_eq!(node.endpoints.intake, "tcp://127.0.0.1:19030");
        assert_eq!(node.endpoints.workers, "tcp://127.0.0.1:19031");
        assert_eq!(node.endpoints.publish, "tcp://127.0.0.1:19034");
        let warnings: Vec<String> = d.warnings().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 1, "{d}");
        assert!(warnings[0].starts_with("configuration_management.ini:25: warning: not supported: network service [digitalpy.core_api] (FlaskHTTPNetworkBlueprints on 0.0.0.0:8080"), "{d}");
        // Every other key is accounted for, in a note.
        let notes = d
            .notes()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        for key in [
            "integration_manager_pull_address",
            "integration_manager_pub_sndhwm",
            "worker_timeout",
            "subject_push_heartbeat_ttl",
            "[ComponentManagementConfiguration]",
            "[ServiceManagementConfiguration]",
        ] {
            assert!(notes.contains(key), "{key} in\n{notes}");
        }
        let toml = node.to_toml(&["from a test".into()], "flows", "action_mappings");
        let config =
            NodeConfig::from_toml("node.toml", &toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(config.workers, Some(3));
        assert_eq!(config.endpoints, node.endpoints);
        assert!(
            toml.contains("workers = 3  # configuration_management.ini:19 worker_count = 3"),
            "{toml}"
        );
        let mut applied = NodeConfig::default();
        node.apply(&mut applied);
        assert_eq!(
            (applied.workers, applied.endpoints),
            (config.workers, config.endpoints)
        );
    }

    #[test]
    fn values_digitalpy_cannot_use_are_errors_with_their_line() {
        let (node, d) = read_text(
            "[ZManagerConfiguration]\nworker_count = three\nsubject_pull_address = inproc://x\nworker_timeout = soon\nworker_cont = 2\nsubject_push_address = tcp://0.0.0.0:5\nworker_count = 2.0\n",
        );
        let errors: Vec<String> = d.errors().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{d}");
        assert!(
            errors[0]
                .starts_with("configuration_management.ini:2: error: worker_count = \"three\""),
            "{d}"
        );
        assert!(
            errors[1].contains(":3: error: subject_pull_address = \"inproc://x\": not supported"),
            "{d}"
        );
        assert!(errors[2].contains(":4: error: worker_timeout"), "{d}");
        let warnings = d
            .warnings()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            warnings.contains(":5: warning: worker_cont is not a ZManagerConfiguration setting"),
            "{warnings}"
        );
        assert!(
            warnings.contains("endpoints.workers = tcp://0.0.0.0:5 listens beyond this machine"),
            "{warnings}"
        );
        assert_eq!(
            node.workers,
            Some(2),
            "the last value, as DigitalPy keeps it"
        );
    }
}
