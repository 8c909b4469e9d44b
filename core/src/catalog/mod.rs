//! The catalog: every flow, mapping and retry policy of a node, validated
//! together, with each flow step resolved once to the role it plays.
//!
//! Among the mapping files, two names are DigitalPy's component files and
//! are read for what they are there: `internal_action_mapping.ini`
//! ([`internal`]: a component's own routing, checked but not added to the
//! node's mappings) and `manifest.ini` ([`manifest`]: the component's name,
//! version and requirements). Every other file is a mapping file.
//!
//! [`Catalog::build`] never stops at the first problem. It returns the
//! catalog it could build and every diagnostic; callers refuse to run when
//! [`Diagnostics::has_errors`] is true.

pub mod action_key;
pub mod defaults;
pub mod diagnostic;
pub mod flow;
pub(crate) mod ini;
pub mod internal;
pub mod manifest;
pub mod mapping;
pub mod source;
pub mod topic;
pub mod version;

use std::collections::{BTreeMap, HashMap};

use crate::catalog::action_key::{ActionKey, Decorator};
use crate::catalog::diagnostic::{Diagnostics, Location};
use crate::catalog::flow::Flow;
use crate::catalog::internal::InternalMappings;
use crate::catalog::manifest::Manifest;
use crate::catalog::mapping::{MappingTable, Route, Target};
use crate::catalog::source::{Format, SourceFile};
use crate::retry::{PolicyEntry, RetryPolicy};

/// What happens at a step of a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepRole {
    /// Step 0: the request a service pushes to start the flow.
    Entry,
    /// `done`: the flow ends and its result is published.
    Done,
    /// `@PUBLISH`: published on the step's topic by the Integration Manager.
    Publish,
    /// `@ASYNC`: the flow suspends until an external response arrives.
    Async,
    /// A step performed by the named service.
    Service(String),
    /// A component action run by a worker.
    Action(Target),
    /// Nothing matches (reported as an error; such a catalog never runs).
    Unresolved,
}

/// How a step got its role: the mapping that matched, where it is written,
/// and the wildcard form of the step's key that found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub key: ActionKey,
    pub location: Location,
    pub pattern: &'static str,
}

/// A flow with the role of each of its steps (same indices as `flow.steps`).
#[derive(Debug, Clone)]
pub struct RoutedFlow {
    pub flow: Flow,
    pub roles: Vec<(StepRole, Option<Via>)>,
}

/// All flows (by name) and all mappings of a node.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub flows: BTreeMap<String, RoutedFlow>,
    pub mappings: MappingTable,
    /// Retry policies, by the key of the mapping they belong to.
    pub retry: HashMap<ActionKey, RetryPolicy>,
    /// DigitalPy component manifests found among the mapping files.
    pub manifests: Vec<Manifest>,
    /// DigitalPy internal action mappings found among the mapping files
    /// (read and checked, not routed: see [`internal`]).
    pub internal: Vec<InternalMappings>,
}

/// What a mapping file is, by its name.
enum MappingRole {
    Mappings,
    Internal,
    Manifest,
}

impl MappingRole {
    fn of(file: &SourceFile) -> Self {
        let name = file.name.rsplit(['/', '\\']).next().unwrap_or_default();
        match (file.format, name) {
            (Format::Ini, internal::FILE_NAME) => MappingRole::Internal,
            (Format::Ini, manifest::FILE_NAME) => MappingRole::Manifest,
            _ => MappingRole::Mappings,
        }
    }
}

impl Catalog {
    /// Loads and validates flow files and mapping files together.
    pub fn build(flow_files: &[SourceFile], mapping_files: &[SourceFile]) -> (Self, Diagnostics) {
        let mut diagnostics = Diagnostics::default();
        let mut mappings = MappingTable::default();
        let mut policies = Vec::new();
        let mut manifests = Vec::new();
        let mut internal = Vec::new();
        for file in mapping_files {
            match MappingRole::of(file) {
                MappingRole::Mappings => {}
                MappingRole::Internal => {
                    internal.push(internal::load_ini(&file.name, &file.text, &mut diagnostics));
                    continue;
                }
                MappingRole::Manifest => {
                    manifests.extend(manifest::load_ini(&file.name, &file.text, &mut diagnostics));
                    continue;
                }
            }
            let loaded = match file.format {
                Format::Ini => mapping::load_ini(&file.name, &file.text, &mut diagnostics),
                Format::Toml => mapping::load_toml(&file.name, &file.text, &mut diagnostics),
            };
            for m in loaded.mappings {
                warn_decorator(m.key.decorator(), &m.location, &mut diagnostics);
                mappings.insert(m, &mut diagnostics);
            }
            policies.extend(loaded.retry);
        }
        let retry = attach_policies(policies, &mappings, &mut diagnostics);

        let mut flows: BTreeMap<String, RoutedFlow> = BTreeMap::new();
        for file in flow_files {
            let loaded = match file.format {
                Format::Ini => flow::load_ini(&file.name, &file.text, &mut diagnostics),
                Format::Toml => flow::load_toml(&file.name, &file.text, &mut diagnostics),
            };
            for flow in loaded {
                if let Some(first) = flows.get(&flow.name) {
                    diagnostics.error(
                        flow.location.clone(),
                        format!(
                            "flow {} is already defined at {} (flow names are unique)",
                            flow.name, first.flow.location
                        ),
                    );
                    continue;
                }
                let routed = route_flow(flow, &mappings, &mut diagnostics);
                flows.insert(routed.flow.name.clone(), routed);
            }
        }
        let catalog = Self {
            flows,
            mappings,
            retry,
            manifests,
            internal,
        };
        (catalog, diagnostics.sorted())
    }

    pub fn flow(&self, name: &str) -> Option<&RoutedFlow> {
        self.flows.get(name)
    }

    /// The retry policy of step `step` of `flow`: the policy of the mapping
    /// the step resolves to, if it has one.
    pub fn retry_policy(&self, flow: &str, step: usize) -> Option<&RetryPolicy> {
        if self.retry.is_empty() {
            return None;
        }
        let (_, via) = self.flows.get(flow)?.roles.get(step)?;
        self.retry.get(&via.as_ref()?.key)
    }
}

/// Each policy belongs to a mapping of a component action, once.
fn attach_policies(
    policies: Vec<PolicyEntry>,
    mappings: &MappingTable,
    diagnostics: &mut Diagnostics,
) -> HashMap<ActionKey, RetryPolicy> {
    let mut out: HashMap<ActionKey, (RetryPolicy, Location)> = HashMap::new();
    for entry in policies {
        match mappings.get(&entry.key).map(|m| &m.route) {
            None => {
                diagnostics.error(
                    entry.location,
                    format!(
                        "retry policy for `{}`, which no [actionmapping] entry maps (a policy names a mapping's key exactly)",
                        entry.key
                    ),
                );
                continue;
            }
            Some(Route::Service(name)) => {
                diagnostics.error(
                    entry.location,
                    format!(
                        "retry policy for `{}`, a step of service {name}: only component actions are retried",
                        entry.key
                    ),
                );
                continue;
            }
            Some(Route::Action(_)) => {}
        }
        if let Some((_, first)) = out.get(&entry.key) {
            diagnostics.error(
                entry.location,
                format!(
                    "`{}` already has a retry policy at {first} (one policy per mapping)",
                    entry.key
                ),
            );
            continue;
        }
        out.insert(entry.key, (entry.policy, entry.location));
    }
    out.into_iter().map(|(k, (p, _))| (k, p)).collect()
}

fn warn_decorator(decorator: Option<&Decorator>, at: &Location, diagnostics: &mut Diagnostics) {
    let Some(d @ Decorator::Qualifier(name)) = decorator else {
        return;
    };
    let message = match d.probably_meant() {
        Some(meant) => format!(
            "decorator @{name} has no behaviour (did you mean @{}? decorators are case-sensitive); it only qualifies the topic",
            meant.name()
        ),
        None => format!("decorator @{name} has no behaviour; it only qualifies the topic"),
    };
    diagnostics.warning(at.clone(), message);
}

fn route_flow(flow: Flow, mappings: &MappingTable, diagnostics: &mut Diagnostics) -> RoutedFlow {
    match flow.steps.len() {
        0 => diagnostics.error(
            flow.location.clone(),
            format!("flow {} has no steps", flow.name),
        ),
        1 => diagnostics.warning(
            flow.location.clone(),
            format!(
                "flow {} has only its entry step; it does nothing",
                flow.name
            ),
        ),
        _ => {}
    }
    let mut done_at: Option<u32> = None;
    let mut roles = Vec::with_capacity(flow.steps.len());
    for (index, step) in flow.steps.iter().enumerate() {
        let key = &step.key;
        warn_decorator(key.decorator(), &step.location, diagnostics);
        if let Some(line) = done_at {
            diagnostics.error(
                step.location.clone(),
                format!(
                    "step `{key}` of flow {} comes after `done` (line {line}) and is never reached",
                    flow.name
                ),
            );
        }
        let role = if index == 0 {
            (StepRole::Entry, None)
        } else if key.is_done() {
            done_at.get_or_insert(step.location.line);
            (StepRole::Done, None)
        } else {
            match key.decorator() {
                Some(Decorator::Publish) => (StepRole::Publish, None),
                Some(Decorator::Async) => (StepRole::Async, None),
                _ => match mappings.resolve(key) {
                    Some(found) => {
                        let role = match &found.mapping.route {
                            Route::Action(target) => StepRole::Action(target.clone()),
                            Route::Service(name) => StepRole::Service(name.clone()),
                        };
                        let via = Via {
                            key: found.mapping.key.clone(),
                            location: found.mapping.location.clone(),
                            pattern: found.pattern,
                        };
                        (role, Some(via))
                    }
                    None => {
                        diagnostics.error(
                            step.location.clone(),
                            format!(
                                "step `{key}` of flow {} maps to nothing: no [actionmapping] or [services] entry matches it (tried s?c?a, s??a, ?c?a, s?c?, s??, ??a, ?c?)",
                                flow.name
                            ),
                        );
                        (StepRole::Unresolved, None)
                    }
                },
            }
        };
        roles.push(role);
    }
    RoutedFlow { flow, roles }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ini(name: &str, text: &str) -> SourceFile {
        SourceFile::new(name, text, Format::Ini)
    }

    #[test]
    fn resolves_each_step_role() {
        let flows = [ini(
            "f.ini",
            "\
[SM]
?SM?Push
Subject?SM@PUBLISH?get_topics
?SM@ASYNC?get_topics_response
?SM?ship
Subject?SM?check
??done
",
        )];
        let maps = [ini(
            "m.ini",
            "[actionmapping]\n??check = x.Checker.check\n[services]\n?SM?ship = shipping\n",
        )];
        let (catalog, d) = Catalog::build(&flows, &maps);
        assert!(d.is_empty(), "{d}");
        let roles: Vec<StepRole> = catalog.flows["SM"]
            .roles
            .iter()
            .map(|(r, _)| r.clone())
            .collect();
        assert_eq!(
            roles,
            [
                StepRole::Entry,
                StepRole::Publish,
                StepRole::Async,
                StepRole::Service("shipping".into()),
                StepRole::Action(Target::parse("Checker.check").unwrap()),
                StepRole::Done,
            ]
        );
        let via = catalog.flows["SM"].roles[4].1.clone().unwrap();
        assert_eq!(
            (via.location.to_string(), via.pattern),
            ("m.ini:2".into(), "??a")
        );
    }

    #[test]
    fn retry_policies_attach_to_their_mapping_and_are_checked() {
        let flows = [ini("f.ini", "[F]\n?F?Push\n?F?work\n?F?other\n??done\n")];
        let maps = [
            ini(
                "m.ini",
                "[actionmapping]\n?F?work = C.work\n??other = C.other\n[services]\n??ship = shipping\n[retry ?F?work]\nmax_attempts = 4\n",
            ),
            SourceFile::new(
                "m.toml",
                "[retry.\"??nothing\"]\n[retry.\"??ship\"]\n[retry.\"?F?work\"]\n",
                Format::Toml,
            ),
        ];
        let (catalog, d) = Catalog::build(&flows, &maps);
        let errors: Vec<String> = d.errors().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [
                "m.toml:1: error: retry policy for `??nothing`, which no [actionmapping] entry maps (a policy names a mapping's key exactly)",
                "m.toml:2: error: retry policy for `??ship`, a step of service shipping: only component actions are retried",
                "m.toml:3: error: `?F?work` already has a retry policy at m.ini:6 (one policy per mapping)",
            ]
        );
        assert_eq!(
            catalog.retry_policy("F", 1).map(|p| p.max_attempts),
            Some(4)
        );
        assert_eq!(catalog.retry_policy("F", 2), None);
        assert_eq!(catalog.retry_policy("G", 1), None);
    }

    /// A DigitalPy component's three files: the external mapping routes
    /// (`^` keys too), the internal one is read but not routed (so a key
    /// in both is not mapped twice), the manifest is read.
    #[test]
    fn digitalpy_component_files_load_with_their_meaning() {
        let flows = [ini(
            "core_flows.ini",
            "[Files_Get]\n?Files_Get?Push\nSubject?^file?GETFile\n??done\n",
        )];
        let dir = "core/files/configuration";
        let maps = [
            ini(
                &format!("{dir}/external_action_mapping.ini"),
                "[actionmapping]\n?^file?GETFile = digitalpy.core.files.files_facade.Files.GETFile\n??Parse = x.Files.parse\n",
            ),
            ini(
                &format!("{dir}/internal_action_mapping.ini"),
                "[actionmapping]\n??Parse = core.files.controllers.FilesController.parse\n[Request]\n__class = a.B\n",
            ),
            ini(
                &format!("{dir}/manifest.ini"),
                "[FilesManifest]\nname = Files\nversion = \"1.0\"\nrequiredAlfaVersion= 0.0.1\n",
            ),
        ];
        let (catalog, d) = Catalog::build(&flows, &maps);
        assert!(!d.has_errors() && d.warnings().count() == 0, "{d}");
        assert_eq!(d.notes().count(), 2, "{d}");
        assert_eq!(catalog.mappings.len(), 2);
        let (role, via) = &catalog.flows["Files_Get"].roles[1];
        assert_eq!(
            role,
            &StepRole::Action(Target::parse("Files.GETFile").unwrap())
        );
        assert_eq!(via.as_ref().map(|v| v.pattern), Some("?c?a"));
        assert_eq!(catalog.internal.len(), 1);
        assert_eq!(catalog.internal[0].component, "files");
        assert_eq!(catalog.manifests.len(), 1);
        assert_eq!(catalog.manifests[0].version.as_deref(), Some("1.0"));
        // The same names as TOML are plain mapping files.
        let toml = [SourceFile::new(
            "x/manifest.toml",
            "[actionmapping]\n\"??a\" = \"C.a\"\n",
            Format::Toml,
        )];
        let (catalog, d) = Catalog::build(&[], &toml);
        assert!(d.is_empty(), "{d}");
        assert_eq!((catalog.mappings.len(), catalog.manifests.len()), (1, 0));
    }

    #[test]
    fn a_flow_without_done_is_legal() {
        let flows = [ini("f.ini", "[F]\n?F?Push\n?F?work\n")];
        let maps = [ini("m.ini", "[actionmapping]\n?F?work = C.work\n")];
        let (_, d) = Catalog::build(&flows, &maps);
        assert!(d.is_empty(), "{d}");
    }

    #[test]
    fn every_error_of_every_file_is_collected() {
        let flows = [
            ini(
                "a.ini",
                "[Dup]\n?Dup?Push\n??done\n[Empty]\n[Lost]\n?Lost?Push\n?Lost?nowhere\n??done\n?Lost?after\n",
            ),
            ini(
                "b.ini",
                "[Dup]\n?Dup?Push\n??done\n[Odd]\n?Odd?Push\n?Odd@publish?x\n?Odd@ROUTING_WORKER?x\n",
            ),
        ];
        let maps = [
            ini("m1.ini", "[actionmapping]\n??x = C.x\n?Lost?after = C.a\n"),
            ini("m2.ini", "[actionmapping]\n??x = D.x\n"),
        ];
        let (_, d) = Catalog::build(&flows, &maps);
        let errors: Vec<String> = d.errors().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [
                "a.ini:4: error: flow Empty has no steps",
                "a.ini:7: error: step `?Lost?nowhere` of flow Lost maps to nothing: no [actionmapping] or [services] entry matches it (tried s?c?a, s??a, ?c?a, s?c?, s??, ??a, ?c?)",
                "a.ini:9: error: step `?Lost?after` of flow Lost comes after `done` (line 8) and is never reached",
                "b.ini:1: error: flow Dup is already defined at a.ini:1 (flow names are unique)",
                "m2.ini:2: error: `??x` is already mapped at m1.ini:2 (a key is mapped once)",
            ]
        );
        let warnings: Vec<String> = d.warnings().map(|w| w.message.clone()).collect();
        assert_eq!(warnings.len(), 2, "{d}");
        assert!(warnings[0].contains("did you mean @PUBLISH?"), "{d}");
        assert!(
            warnings[1].contains("@ROUTING_WORKER has no behaviour"),
            "{d}"
        );
    }
}
