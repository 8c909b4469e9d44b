//! Action mappings: which component action runs an action key.
//!
//! INI, as DigitalPy writes it (its Python dotted targets load unchanged; the
//! last two segments name the component and the action):
//!
//! ```ini
//! [actionmapping]
//! ??get_service_topics = digitalpy.core.service_management.service_management_facade.ServiceManagement.get_service_topics
//! ?IAMConnection?Connection = Iam.connection
//!
//! [services]
//! ; steps performed by a service, not by a component
//! ?Orders?ship = shipping
//! ```
//!
//! TOML says the same; a target is a dotted string or a table:
//!
//! ```toml
//! [actionmapping]
//! "?IAMConnection?Connection" = "Iam.connection"
//! "??authorize" = { component = "Iam", action = "authorize" }
//!
//! [services]
//! "?Orders?ship" = "shipping"
//! ```
//!
//! A file may also give a retry policy to a mapping, in a `[retry <key>]`
//! section (TOML: a `[retry."<key>"]` table): the parser reads it with the
//! rest of the file, once, and [`crate::retry`] says what its settings
//! mean. The catalog attaches each policy to its mapping.
//!
//! A key is resolved against the table by trying, in order, the forms
//! `s?c?a`, `s??a`, `?c?a`, `s?c?`, `s??`, `??a`, `?c?` — DigitalPy's order.
//! The context and its decorator count as one field (`c` is `Context@DECO`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

use crate::catalog::action_key::ActionKey;
use crate::catalog::diagnostic::{Diagnostics, Location};
use crate::catalog::ini;
use crate::retry::{self, PolicyEntry, Setting};

/// The component action a key maps to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub component: String,
    pub action: String,
}

/// What performs a step: a component action, or a named external service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Action(Target),
    Service(String),
}

/// One mapping line: a key, what it routes to, and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub key: ActionKey,
    pub route: Route,
    pub location: Location,
}

/// What one mapping file says: its mappings, sorted by line, and the retry
/// policies it gives them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MappingFile {
    pub mappings: Vec<Mapping>,
    pub retry: Vec<PolicyEntry>,
}

/// A mapping found for a key, and the wildcard form that found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution<'a> {
    pub mapping: &'a Mapping,
    pub pattern: &'static str,
}

/// All mappings of all files, by key.
#[derive(Debug, Clone, Default)]
pub struct MappingTable {
    by_key: HashMap<ActionKey, Mapping>,
}

/// The wildcard forms tried by [`MappingTable::resolve`], in order:
/// (label, empty sender, empty context, empty action).
const PATTERNS: [(&str, bool, bool, bool); 7] = [
    ("s?c?a", false, false, false),
    ("s??a", false, true, false),
    ("?c?a", true, false, false),
    ("s?c?", false, false, true),
    ("s??", false, true, true),
    ("??a", true, true, false),
    ("?c?", true, false, true),
];

impl MappingTable {
    /// Adds `mapping`; a key already present (from any file, or from the
    /// other section) is an error naming both places, never an override.
    pub fn insert(&mut self, mapping: Mapping, diagnostics: &mut Diagnostics) {
        if let Some(first) = self.by_key.get(&mapping.key) {
            diagnostics.error(
                mapping.location.clone(),
                format!(
                    "`{}` is already mapped at {} (a key is mapped once)",
                    mapping.key, first.location
                ),
            );
            return;
        }
        self.by_key.insert(mapping.key.clone(), mapping);
    }

    /// The mapping for `key`, trying the wildcard forms in DigitalPy's order.
    pub fn resolve(&self, key: &ActionKey) -> Option<Resolution<'_>> {
        PATTERNS.iter().find_map(|&(pattern, s, c, a)| {
            let form = key.with_wildcards(s, c, a);
            if form.sender().is_empty() && form.context_is_empty() && form.action().is_empty() {
                return None;
            }
            self.by_key
                .get(&form)
                .map(|mapping| Resolution { mapping, pattern })
        })
    }

    /// The mapping of exactly `key` (no wildcard resolution).
    pub fn get(&self, key: &ActionKey) -> Option<&Mapping> {
        self.by_key.get(key)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Every mapping, sorted by file and line.
    pub fn iter(&self) -> impl Iterator<Item = &Mapping> {
        let mut all: Vec<&Mapping> = self.by_key.values().collect();
        all.sort_by(|a, b| a.location.cmp(&b.location));
        all.into_iter()
    }
}

impl Target {
    /// Parses `Component.action` or a longer dotted path whose last two
    /// segments are the component and the action (DigitalPy's
    /// `package.module.Class.method`).
    pub fn parse(path: &str) -> Result<Self, String> {
        let segments: Vec<&str> = path.split('.').collect();
        if segments.len() < 2 {
            return Err(format!(
                "target {path:?} must be `Component.action` (or a dotted path ending in them)"
            ));
        }
        let n = segments.len();
        let bad = segments[..n - 1]
            .iter()
            .find(|s| !is_identifier(s))
            .or_else(|| segments[n - 1..].iter().find(|s| !is_action_name(s)));
        if let Some(bad) = bad {
            return Err(format!(
                "target {path:?} has an invalid segment {bad:?} (letters, digits and `_` only)"
            ));
        }
        Self::new(segments[n - 2], segments[n - 1])
    }

    fn new(component: &str, action: &str) -> Result<Self, String> {
        if !is_identifier(component) {
            return Err(format!(
                "component name {component:?} is not an identifier (letters, digits and `_` only)"
            ));
        }
        if !is_action_name(action) {
            return Err(format!(
                "action name {action:?} is not an identifier (letters, digits and `_` only)"
            ));
        }
        Ok(Self {
            component: component.to_owned(),
            action: action.to_owned(),
        })
    }
}

/// Letters, digits and `_`: what component and action names are made of.
pub(crate) fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// What a mapping may name as an action: an identifier, or one with `-`.
///
/// DigitalPy's `files` component maps `?^file^get-or-create?GETFileGet-or-create`
/// to the method `Files.GETFileGet-or-create`: the file loads there, and
/// so it does here. No component can declare such an action (nor can a
/// Python class have such a method), so the mapping is warned about when
/// it is read, and `zmanager check` reports it as an action its
/// component does not declare, or the component as missing.
fn is_action_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.component, self.action)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Action(target) => write!(f, "{target}"),
            Route::Service(name) => write!(f, "service {name}"),
        }
    }
}

/// Turns one `key = value` line of a section into a [`Mapping`].
fn mapping(
    section: Section,
    key: &str,
    value: Result<Route, String>,
    location: Location,
    diagnostics: &mut Diagnostics,
) -> Option<Mapping> {
    let key = match ActionKey::parse(key) {
        Ok(key) => key,
        Err(e) => {
            diagnostics.error(location, format!("malformed action key {key:?}: {e}"));
            return None;
        }
    };
    // `resolve` never tries the form with every field a wildcard.
    if key.sender().is_empty() && key.context_is_empty() && key.action().is_empty() {
        diagnostics.error(
            location,
            format!(
                "`{key}` would never match: a mapping key needs a sender, a context or an action"
            ),
        );
        return None;
    }
    if let Ok(Route::Action(target)) = &value
        && target.action.contains('-')
    {
        diagnostics.warning(
            location.clone(),
            format!(
                "`{key}` maps to action {:?}, a name with `-` that no component can declare (DigitalPy loads such a line, but no Python method is named so either)",
                target.action
            ),
        );
    }
    match value {
        Ok(route) => Some(Mapping {
            key,
            route,
            location,
        }),
        Err(e) => {
            diagnostics.error(location, format!("[{}] `{key}`: {e}", section.name()));
            None
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Section {
    ActionMapping,
    Services,
}

impl Section {
    fn name(self) -> &'static str {
        match self {
            Section::ActionMapping => "actionmapping",
            Section::Services => "services",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "actionmapping" => Some(Section::ActionMapping),
            "services" => Some(Section::Services),
            _ => None,
        }
    }
}

fn service_name(name: &str) -> Result<Route, String> {
    if name.is_empty() || !name.chars().all(crate::catalog::action_key::is_field_char) {
        return Err(format!(
            "service name {name:?} must be letters, digits, `_`, `-` and `.`"
        ));
    }
    Ok(Route::Service(name.to_owned()))
}

/// The key of a `[retry <key>]` section (empty for `[retry]`), or `None`
/// for any other section.
fn retry_section_key(name: &str) -> Option<&str> {
    name.strip_prefix("retry")
        .filter(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
        .map(str::trim)
}

/// Loads the mappings and retry policies of a DigitalPy-style INI file.
pub fn load_ini(file: &Arc<str>, text: &str, diagnostics: &mut Diagnostics) -> MappingFile {
    let mut out = MappingFile::default();
    for section in ini::parse(file, text, diagnostics) {
        if let Some(key) = retry_section_key(&section.name) {
            out.retry
                .extend(retry_ini(file, key, &section, diagnostics));
            continue;
        }
        let Some(kind) = Section::from_name(&section.name) else {
            diagnostics.error(
                Location::new(file, section.line),
                format!(
                    "unknown section [{}]; a mapping file has [actionmapping], [services] and [retry <key>] sections",
                    section.name
                ),
            );
            continue;
        };
        for entry in section.entries {
            let location = Location::new(file, entry.line);
            let value = match (kind, entry.value.as_deref()) {
                (_, None | Some("")) => Err("has no target (expected `key = target`)".to_owned()),
                (Section::ActionMapping, Some(path)) => Target::parse(path).map(Route::Action),
                (Section::Services, Some(name)) => service_name(name),
            };
            out.mappings
                .extend(mapping(kind, &entry.key, value, location, diagnostics));
        }
    }
    out
}

/// The policy of a `[retry <key>]` section.
fn retry_ini(
    file: &Arc<str>,
    key: &str,
    section: &ini::Section,
    diagnostics: &mut Diagnostics,
) -> Option<PolicyEntry> {
    let at = Location::new(file, section.line);
    if key.is_empty() {
        diagnostics.error(at, "[retry] names no action key (expected `[retry <key>]`)");
        return None;
    }
    let mut settings = Vec::new();
    let mut complete = true;
    for entry in &section.entries {
        let location = Location::new(file, entry.line);
        match entry.value.as_deref() {
            Some(value) => settings.push(Setting {
                name: &entry.key,
                value: retry::Value::Text(value),
                location,
            }),
            None => {
                diagnostics.error(
                    location,
                    format!("retry setting {:?} has no value", entry.key),
                );
                complete = false;
            }
        }
    }
    retry::read_policy(key, at, settings, diagnostics).filter(|_| complete)
}

/// A TOML mapping file, with the place of every key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    actionmapping: BTreeMap<toml::Spanned<String>, TargetToml>,
    #[serde(default)]
    services: BTreeMap<toml::Spanned<String>, String>,
    /// `[retry."<key>"]` tables: each setting by name.
    #[serde(default)]
    retry: BTreeMap<toml::Spanned<String>, BTreeMap<toml::Spanned<String>, toml::Value>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TargetToml {
    Path(String),
    Table(TargetTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetTable {
    component: String,
    action: String,
}

/// Loads the mappings and retry policies of a TOML file.
pub fn load_toml(file: &Arc<str>, text: &str, diagnostics: &mut Diagnostics) -> MappingFile {
    let parsed: TomlFile = match toml::from_str(text) {
        Ok(parsed) => parsed,
        Err(e) => {
            diagnostics.toml_error(file, text, &e);
            return MappingFile::default();
        }
    };
    let mut mappings = Vec::new();
    for (key, target) in parsed.actionmapping {
        let location = Location::at_offset(file, text, key.span().start);
        let value = match target {
            TargetToml::Path(path) => Target::parse(&path),
            TargetToml::Table(t) => Target::new(&t.component, &t.action),
        };
        let route = value.map(Route::Action);
        mappings.extend(mapping(
            Section::ActionMapping,
            key.get_ref(),
            route,
            location,
            diagnostics,
        ));
    }
    for (key, name) in parsed.services {
        let location = Location::at_offset(file, text, key.span().start);
        let route = service_name(&name);
        mappings.extend(mapping(
            Section::Services,
            key.get_ref(),
            route,
            location,
            diagnostics,
        ));
    }
    mappings.sort_by(|a, b| a.location.cmp(&b.location));
    let mut retry = Vec::new();
    for (key, table) in &parsed.retry {
        let at = Location::at_offset(file, text, key.span().start);
        let settings = table
            .iter()
            .map(|(name, value)| Setting {
                name: name.get_ref(),
                value: retry::Value::Toml(value),
                location: Location::at_offset(file, text, name.span().start),
            })
            .collect();
        retry.extend(retry::read_policy(key.get_ref(), at, settings, diagnostics));
    }
    MappingFile { mappings, retry }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> ActionKey {
        ActionKey::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn table(entries: &[(&str, &str)]) -> MappingTable {
        let file: Arc<str> = Arc::from("m.ini");
        let mut t = MappingTable::default();
        let mut d = Diagnostics::default();
        for (i, (k, target)) in entries.iter().enumerate() {
            let mapping = Mapping {
                key: key(k),
                route: Route::Action(Target::parse(target).unwrap()),
                location: Location::new(&file, u32::try_from(i).unwrap() + 1),
            };
            t.insert(mapping, &mut d);
        }
        assert!(d.is_empty(), "{d}");
        t
    }

    fn resolved(t: &MappingTable, k: &str) -> Option<(String, &'static str)> {
        t.resolve(&key(k))
            .map(|r| (r.mapping.route.to_string(), r.pattern))
    }

    #[test]
    fn resolution_follows_digitalpy_order() {
        let all = [
            ("s?c?a", "C.sca"),
            ("s??a", "C.sa"),
            ("?c?a", "C.ca"),
            ("s?c?", "C.sc"),
            ("s??", "C.s"),
            ("??a", "C.a"),
            ("?c?", "C.c"),
        ];
        // Remove the best match one at a time: the next form in order wins.
        for skip in 0..all.len() {
            let t = table(&all[skip..]);
            let (target, pattern) = resolved(&t, "s?c?a").unwrap();
            assert_eq!(pattern, all[skip].0);
            assert_eq!(target, all[skip].1);
        }
        assert_eq!(resolved(&table(&[("x??", "C.x")]), "s?c?a"), None);
    }

    /// `??` loaded without a word and never matched (resolution skips the
    /// all-wildcard form); it is an error now, in both formats.
    #[test]
    fn an_all_wildcard_key_is_refused() {
        let file: Arc<str> = Arc::from("m.ini");
        let mut d = Diagnostics::default();
        let loaded = load_ini(
            &file,
            "[actionmapping]\n?? = Echo.echo\n??a = Echo.echo\n",
            &mut d,
        )
        .mappings;
        assert_eq!(loaded.len(), 1, "the other key loads");
        let text = d.to_string();
        assert!(text.contains("`??` would never match"), "{text}");
        let toml: Arc<str> = Arc::from("m.toml");
        let mut d = Diagnostics::default();
        let loaded = load_toml(&toml, "[actionmapping]\n\"??\" = \"Echo.echo\"\n", &mut d).mappings;
        assert!(loaded.is_empty());
        assert!(d.to_string().contains("would never match"), "{d}");
    }

    #[test]
    fn decorator_belongs_to_the_context() {
        let t = table(&[("?c?a", "C.plain"), ("??get", "C.get")]);
        assert_eq!(resolved(&t, "s?c@PUBLISH?a"), None);
        assert_eq!(
            resolved(&t, "Subject?S@PUBLISH?get"),
            Some(("C.get".into(), "??a"))
        );
        let t = table(&[("?c@worker?a", "C.w")]);
        assert_eq!(resolved(&t, "x?c@worker?a"), Some(("C.w".into(), "?c?a")));
    }

    #[test]
    fn digitalpy_dotted_targets_load_unchanged() {
        let mut d = Diagnostics::default();
        let file: Arc<str> = Arc::from("external_action_mapping.ini");
        let text = "\
[actionmapping]
; Request
;  action: Connection
??get_service_topics = digitalpy.core.service_management.service_management_facade.ServiceManagement.get_service_topics

??stop_service = digitalpy.core.service_management.service_management_facade.ServiceManagement.stop_service
";
        let m = load_ini(&file, text, &mut d).mappings;
        assert!(d.is_empty(), "{d}");
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0].route,
            Route::Action(Target {
                component: "ServiceManagement".into(),
                action: "get_service_topics".into()
            })
        );
        assert_eq!(m[0].location.line, 4);
        assert_eq!(m[1].location.line, 6);
    }

    /// The shapes of DigitalPy's component_management and files mappings:
    /// `^` in keys, and a method name with `-` (loaded, and warned about).
    #[test]
    fn digitalpy_caret_mappings_load_and_resolve() {
        let mut d = Diagnostics::default();
        let file: Arc<str> = Arc::from("external_action_mapping.ini");
        let text = "\
[actionmapping]
?^Widget^Version?POSTWidgetVersion = app.widgets.widgets_facade.Widgets.POSTWidgetVersion
?^Widget?GETWidget = app.widgets.widgets_facade.Widgets.GETWidget
?^Widget^?GETWidgetId = app.widgets.widgets_facade.Widgets.GETWidgetId
?^part^get-or-make?GETPartGet-or-make = app.widgets.widgets_facade.Widgets.GETPartGet-or-make

";
        let m = load_ini(&file, text, &mut d).mappings;
        assert_eq!(m.len(), 4, "{d}");
        assert!(!d.has_errors(), "{d}");
        let warnings: Vec<String> = d.warnings().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            [
                "external_action_mapping.ini:5: warning: `?^part^get-or-make?GETPartGet-or-make` maps to action \"GETPartGet-or-make\", a name with `-` that no component can declare (DigitalPy loads such a line, but no Python method is named so either)"
            ]
        );
        let mut t = MappingTable::default();
        for mapping in m {
            t.insert(mapping, &mut d);
        }
        assert_eq!(
            resolved(&t, "Subject?^Widget^?GETWidgetId"),
            Some(("Widgets.GETWidgetId".into(), "?c?a"))
        );
        assert_eq!(resolved(&t, "Subject?^Widget?GETWidgetId"), None);
        assert_eq!(resolved(&t, "?Widget?GETWidget"), None);
        // Still refused: `-` anywhere else in a target, or leading.
        assert!(Target::parse("a-b.C.d").is_err());
        assert!(Target::parse("C-x.d").is_err());
        assert!(Target::parse("C.-d").is_err());
    }

    #[test]
    fn toml_says_the_same_as_ini() {
        let mut d = Diagnostics::default();
        let ini = load_ini(
            &Arc::from("m.ini"),
            "[actionmapping]\n?c?a = x.C.a\n??b = C.b\n[services]\n?o?ship = shipping\n",
            &mut d,
        )
        .mappings;
        let toml = load_toml(
            &Arc::from("m.toml"),
            "[actionmapping]\n\"?c?a\" = \"x.C.a\"\n\"??b\" = { component = \"C\", action = \"b\" }\n\n[services]\n\"?o?ship\" = \"shipping\"\n",
            &mut d,
        )
        .mappings;
        assert!(d.is_empty(), "{d}");
        let routes = |m: &[Mapping]| -> Vec<(String, Route, u32)> {
            m.iter()
                .map(|m| (m.key.to_string(), m.route.clone(), m.location.line))
                .collect()
        };
        let mut from_toml = routes(&toml);
        from_toml.iter_mut().for_each(|r| {
            if r.2 == 6 {
                r.2 = 5;
            }
        });
        assert_eq!(routes(&ini), from_toml);
    }

    #[test]
    fn a_key_is_mapped_once() {
        let mut d = Diagnostics::default();
        let mut t = MappingTable::default();
        for m in load_ini(&Arc::from("a.ini"), "[actionmapping]\n??x = C.x\n", &mut d).mappings {
            t.insert(m, &mut d);
        }
        for m in load_ini(&Arc::from("b.ini"), "[services]\n??x = svc\n", &mut d).mappings {
            t.insert(m, &mut d);
        }
        let errors: Vec<String> = d.errors().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            ["b.ini:2: error: `??x` is already mapped at a.ini:2 (a key is mapped once)"]
        );
        assert_eq!(resolved(&t, "??x"), Some(("C.x".into(), "s?c?a")));
    }

    #[test]
    fn every_bad_line_is_reported() {
        let mut d = Diagnostics::default();
        let text = "[actionmapping]\nbad = C.x\n??a\n??b = C\n??c = C.bad!name\n[other]\n??d = C.d\n[services]\n??e = bad~name\n??f = ok\n";
        let m = load_ini(&Arc::from("m.ini"), text, &mut d).mappings;
        let lines: Vec<u32> = d.errors().map(|e| e.location.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 9], "{d}");
        assert_eq!(m.len(), 1);
        let text = d.to_string();
        assert!(text.contains("has no target"), "{text}");
        assert!(text.contains("unknown section [other]"), "{text}");
    }

    #[test]
    fn toml_errors_have_lines() {
        let mut d = Diagnostics::default();
        load_toml(
            &Arc::from("m.toml"),
            "[actionmapping]\n\"??a\" = \"C.a\"\n\"?x\" = \"C.b\"\n",
            &mut d,
        );
        let e: Vec<_> = d.errors().collect();
        assert_eq!(e.len(), 1, "{d}");
        assert_eq!(e[0].location.line, 3);
        let mut d = Diagnostics::default();
        load_toml(&Arc::from("m.toml"), "[actionmaping]\n", &mut d);
        assert_eq!(d.errors().next().map(|e| e.location.line), Some(1), "{d}");
    }

    fn policies_ini(text: &str) -> (Vec<PolicyEntry>, Diagnostics) {
        let mut d = Diagnostics::default();
        (load_ini(&Arc::from("m.ini"), text, &mut d).retry, d)
    }

    fn policies_toml(text: &str) -> (Vec<PolicyEntry>, Diagnostics) {
        let mut d = Diagnostics::default();
        (load_toml(&Arc::from("m.toml"), text, &mut d).retry, d)
    }

    #[test]
    fn retry_policies_are_read_with_the_mappings_and_say_the_same_in_both_formats() {
        let expected = crate::retry::RetryPolicy {
            max_attempts: 6,
            initial_delay: std::time::Duration::from_millis(100),
            multiplier: 2.0,
            max_delay: std::time::Duration::from_millis(500),
            jitter: 0.0,
            no_retry: vec!["bad_request".into()],
        };
        let mut d = Diagnostics::default();
        let from_ini = load_ini(
            &Arc::from("m.ini"),
            "[actionmapping]\n??x = C.x\n[retry ??x]\nmax_attempts = 6\ninitial_delay_ms = 100\nmultiplier = 2\nmax_delay_ms = 500\nno_retry = bad_request\n",
            &mut d,
        );
        assert!(d.is_empty(), "{d}");
        let from_toml = load_toml(
            &Arc::from("m.toml"),
            "[actionmapping]\n\"??x\" = \"C.x\"\n[retry.\"??x\"]\nmax_attempts = 6\ninitial_delay_ms = 100\nmultiplier = 2\nmax_delay_ms = 500\nno_retry = [\"bad_request\"]\n",
            &mut d,
        );
        assert!(d.is_empty(), "{d}");
        for file in [&from_ini, &from_toml] {
            assert_eq!(file.mappings.len(), 1);
            assert_eq!(file.retry.len(), 1);
            assert_eq!(file.retry[0].policy, expected);
            assert_eq!(file.retry[0].key.to_string(), "??x");
            assert_eq!(file.retry[0].location.line, 3);
        }
        // Unset settings keep their defaults.
        let (entries, d) = policies_ini("[retry ??y]\n");
        assert!(d.is_empty(), "{d}");
        assert_eq!(entries[0].policy, crate::retry::RetryPolicy::default());
    }

    /// Delays are durations as the node's settings are (`"100ms"`), the
    /// old `_ms` names still read, and one delay written both ways is set
    /// twice.
    #[test]
    fn retry_delays_are_durations_and_the_old_names_still_read() {
        let (entries, d) = policies_ini("[retry ??x]\ninitial_delay = 250ms\nmax_delay = 1m\n");
        assert!(d.is_empty(), "{d}");
        assert_eq!(
            entries[0].policy.initial_delay,
            std::time::Duration::from_millis(250)
        );
        assert_eq!(
            entries[0].policy.max_delay,
            std::time::Duration::from_secs(60)
        );
        let (entries, d) =
            policies_toml("[retry.\"??x\"]\ninitial_delay = \"2s\"\nmax_delay_ms = 5000\n");
        assert!(d.is_empty(), "{d}");
        assert_eq!(
            entries[0].policy.initial_delay,
            std::time::Duration::from_secs(2)
        );
        assert_eq!(
            entries[0].policy.max_delay,
            std::time::Duration::from_secs(5)
        );
        let (entries, d) = policies_ini(
            "[retry ??x]\ninitial_delay = 1s\ninitial_delay_ms = 1000\nmax_delay = soon\n",
        );
        assert!(entries.is_empty());
        let text = d.to_string();
        assert!(
            text.contains("m.ini:3: error: retry `initial_delay_ms`: set twice"),
            "{text}"
        );
        assert!(
            text.contains("m.ini:4: error: retry `max_delay`: must be a duration from 0 to"),
            "{text}"
        );
    }

    #[test]
    fn every_bad_retry_setting_is_reported_with_its_line() {
        let (entries, d) = policies_ini(
            "[retry ??x]\nmax_attempts = 0\nmultiplier = 0.5\njitter = 2\nno_retry = bad_request, oops\ndelay = 3\nmax_attempts = 2\nmax_delay_ms\n[retry]\n[retry bad key]\n[retry ??z]\ninitial_delay_ms = 100\nmax_delay_ms = 50\n",
        );
        assert!(entries.is_empty());
        let mut lines: Vec<u32> = d.errors().map(|e| e.location.line).collect();
        lines.sort_unstable();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7, 8, 9, 10, 13], "{d}");
        let text = d.to_string();
        for expected in [
            "m.ini:2: error: retry `max_attempts`: must be a whole number from 1 to 1000",
            "m.ini:5: error: retry `no_retry`: unknown error kind \"oops\"",
            "m.ini:6: error: retry `delay`: unknown setting",
            "m.ini:7: error: retry `max_attempts`: set twice",
            "m.ini:8: error: retry setting \"max_delay_ms\" has no value",
            "m.ini:9: error: [retry] names no action key",
            "m.ini:10: error: retry policy for malformed action key \"bad key\"",
            "m.ini:13: error: retry: max_delay (50ms) is less than initial_delay (100ms)",
        ] {
            assert!(text.contains(expected), "{expected}\nin\n{text}");
        }
        let (_, d) = policies_toml("[retry.\"??x\"]\nmax_attempts = \"five\"\njitter = -1\n");
        let mut lines: Vec<u32> = d.errors().map(|e| e.location.line).collect();
        lines.sort_unstable();
        assert_eq!(lines, [2, 3], "{d}");
        // A `retry` that is not a table of tables is a shape error at its
        // line, reported once, like any other section of the wrong shape.
        for text in [
            "retry = 5\n",
            "[actionmapping]\n\"??x\" = \"C.x\"\n[retry]\nx = 5\n",
        ] {
            let (_, d) = policies_toml(text);
            assert_eq!(d.errors().count(), 1, "{d}");
        }
        // Not TOML at all: one error, not one per reader.
        let (_, d) = policies_toml("[[[\n");
        assert_eq!(d.errors().count(), 1, "{d}");
        // A line that is not INI is reported once too.
        let (entries, d) = policies_ini("[retry ??x]\nmax_attempts = 2\n= 3\n");
        assert_eq!(d.errors().count(), 1, "{d}");
        assert_eq!(entries.len(), 1, "the rest of the section is read");
    }
}
