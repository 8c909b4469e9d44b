//! DigitalPy component manifests (`configuration/manifest.ini`): who a
//! component is and what it needs.
//!
//! In DigitalPy a manifest is one INI section, `[<Component>Manifest]`:
//!
//! ```ini
//! [FilesManifest]
//! UUID = ee50c4c3-9eb3-4bf5-a466-9b5fcafc8907
//! name = Files
//! version = "1.0"
//! requiredAlfaVersion= 0.0.1
//! dependencies = Serialization
//! description = ""What the component does""
//! ```
//!
//! DigitalPy reads the first section (`ComponentManifestController.read_manifest`)
//! and, to register a component (`ComponentRegistrationHandler.validate_manifest`),
//! requires `name` to be the component's, its `requiredAlfaVersion` (a
//! dotted version, compared part by part as integers) to be at most the
//! installed DigitalPy's, and every component named in `dependencies`
//! (comma-separated) to be registered first: until then the component is
//! left pending. `UUID` and `version` must not change for a name already
//! registered. The rest (`description`, `author`, `url`, `license`…) is
//! for people. Values are often quoted, sometimes twice (`""FreeTAKTeam""`):
//! the quotes are not part of the value.
//!
//! Here a manifest is read and validated with its file, reported by
//! `zmanager check` (name, version, requirements), and compared with the
//! components linked or loaded: zmanager is not DigitalPy, so
//! `requiredAlfaVersion` is reported, not compared with anything.

use std::sync::Arc;

use crate::catalog::diagnostic::{Diagnostics, Location};
use crate::catalog::ini;

/// What one manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `[<Name>Manifest]`, where it is.
    pub section: String,
    pub location: Location,
    pub name: String,
    pub version: Option<String>,
    pub uuid: Option<String>,
    /// The DigitalPy version the component is built for.
    pub required_alfa_version: Option<String>,
    /// Components that must be registered before this one.
    pub dependencies: Vec<String>,
}

/// The file name DigitalPy gives a component's manifest.
pub const FILE_NAME: &str = "manifest.ini";

/// A value without the quotes DigitalPy's files put around it.
fn unquote(value: &str) -> &str {
    value.trim().trim_matches('"').trim()
}

/// `0.1`, `0.0.1`, `2024.07.17`: integers separated by dots, as DigitalPy
/// compares them.
fn is_dotted_version(text: &str) -> bool {
    !text.is_empty()
        && text
            .split('.')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
}

/// Reads a manifest; problems go to `diagnostics`. `None` when there is no
/// usable manifest in the file.
pub fn load_ini(file: &Arc<str>, text: &str, diagnostics: &mut Diagnostics) -> Option<Manifest> {
    let sections = ini::parse(file, text, diagnostics);
    let Some(section) = sections.first() else {
        diagnostics.error(
            Location::new(file, 0),
            "a manifest has one `[<Component>Manifest]` section; this file has none",
        );
        return None;
    };
    let at = Location::new(file, section.line);
    for other in &sections[1..] {
        diagnostics.warning(
            Location::new(file, other.line),
            format!(
                "section [{}] is not read: DigitalPy reads a manifest's first section, [{}]",
                other.name, section.name
            ),
        );
    }
    if !section.name.to_lowercase().ends_with("manifest") {
        diagnostics.warning(
            at.clone(),
            format!(
                "section [{}] should be named [<Component>Manifest]: DigitalPy's component registration looks it up by that name",
                section.name
            ),
        );
    }
    let mut manifest = Manifest {
        section: section.name.clone(),
        location: at.clone(),
        name: String::new(),
        version: None,
        uuid: None,
        required_alfa_version: None,
        dependencies: Vec::new(),
    };
    let mut seen: Vec<&str> = Vec::new();
    for entry in &section.entries {
        let location = Location::new(file, entry.line);
        let Some(raw) = entry.value.as_deref() else {
            diagnostics.warning(
                location,
                format!(
                    "{:?} has no value (expected `key = value`); DigitalPy skips such a line",
                    entry.key
                ),
            );
            continue;
        };
        if seen.contains(&entry.key.as_str()) {
            diagnostics.warning(
                location.clone(),
                format!("{} is set twice; DigitalPy keeps the last", entry.key),
            );
        }
        seen.push(&entry.key);
        let value = unquote(raw).to_owned();
        match entry.key.as_str() {
            "name" => manifest.name = value,
            "version" => manifest.version = Some(value),
            "UUID" => manifest.uuid = Some(value),
            "requiredAlfaVersion" => {
                if !is_dotted_version(&value) {
                    diagnostics.error(
                        location,
                        format!(
                            "requiredAlfaVersion {value:?} is not a dotted version (`0.1`, `0.3.16`): DigitalPy compares it part by part as integers and refuses the component"
                        ),
                    );
                }
                manifest.required_alfa_version = Some(value);
            }
            "dependencies" => {
                manifest.dependencies = value
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            // description, author, author_email, url, repo, license…: for
            // people.
            _ => {}
        }
    }
    if manifest.name.is_empty() {
        diagnostics.error(
            at.clone(),
            format!(
                "manifest [{}] has no `name` (DigitalPy registers a component by it)",
                section.name
            ),
        );
        return None;
    }
    if manifest.required_alfa_version.is_none() {
        diagnostics.error(
            at.clone(),
            format!(
                "manifest of {} has no `requiredAlfaVersion` (DigitalPy refuses a component without it)",
                manifest.name
            ),
        );
    }
    if manifest.version.is_none() {
        diagnostics.warning(
            at,
            format!("manifest of {} has no `version`", manifest.name),
        );
    }
    Some(manifest)
}

/// Each dependency must be a component that some other manifest names or
/// that `available` (linked or loaded here) knows: DigitalPy would leave
/// the component pending, never registered, until it is.
pub fn check_dependencies(
    manifests: &[Manifest],
    available: impl Fn(&str) -> bool,
    diagnostics: &mut Diagnostics,
) {
    for manifest in manifests {
        for dependency in &manifest.dependencies {
            let known = available(dependency)
                || manifests
                    .iter()
                    .any(|m| m.name.eq_ignore_ascii_case(dependency));
            if !known {
                diagnostics.warning(
                    manifest.location.clone(),
                    format!(
                        "component {} depends on {dependency}, which no manifest here names and no component linked or loaded is: DigitalPy would leave {} pending, unregistered",
                        manifest.name, manifest.name
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (Option<Manifest>, Diagnostics) {
        let mut d = Diagnostics::default();
        let file: Arc<str> = Arc::from("c/configuration/manifest.ini");
        (load_ini(&file, text, &mut d), d)
    }

    #[test]
    fn reads_digitalpy_shaped_manifests_with_their_quotes() {
        let (m, d) = read(
            "[component_managementManifest]\n; a UUID\nUUID = cf1bb96c-5d88-4151-9bb2-18263f249b58\nname = component_management\nversion = \"2024.07.17\"\nrequiredAlfaVersion= 0.0.1\ndescription = \"\"Manages components: discovery\"\"\nauthor=\"\"Someone\"\"\nlicense = \"EPL\"\n",
        );
        assert!(d.is_empty(), "{d}");
        let m = m.expect("a manifest");
        assert_eq!(m.name, "component_management");
        assert_eq!(m.version.as_deref(), Some("2024.07.17"));
        assert_eq!(m.required_alfa_version.as_deref(), Some("0.0.1"));
        assert_eq!(m.location.line, 1);
        let (m, d) = read(
            "[DomainManifest]\nname=domain\nrequiredAlfaVersion=0.2.7\nversion=0.1\ndependencies = Serialization, IAM\n",
        );
        assert!(d.is_empty(), "{d}");
        assert_eq!(
            m.expect("a manifest").dependencies,
            ["Serialization", "IAM"]
        );
    }

    #[test]
    fn what_digitalpy_refuses_is_an_error_with_its_line() {
        let (m, d) = read("[XManifest]\nname = X\nversion = 1\nrequiredAlfaVersion = one\n");
        assert!(m.is_some());
        assert_eq!(
            d.to_string(),
            "c/configuration/manifest.ini:4: error: requiredAlfaVersion \"one\" is not a dotted version (`0.1`, `0.3.16`): DigitalPy compares it part by part as integers and refuses the component\n"
        );
        let (m, d) = read("[XManifest]\nversion = 1\n");
        assert!(m.is_none());
        assert!(
            d.to_string()
                .contains("manifest.ini:1: error: manifest [XManifest] has no `name`"),
            "{d}"
        );
        let (m, d) = read("; nothing\n");
        assert!(m.is_none());
        assert!(
            d.to_string()
                .contains("manifest.ini: error: a manifest has one"),
            "{d}"
        );
        let (_, d) = read("[X]\nname = X\nrequiredAlfaVersion = 1\n");
        assert_eq!(d.warnings().count(), 2, "{d}"); // the section's name, no version
    }

    #[test]
    fn unknown_dependencies_are_warned_about() {
        let (a, _) = read(
            "[AManifest]\nname = A\nversion = 1\nrequiredAlfaVersion = 1\ndependencies = B, Linked, Gone\n",
        );
        let (b, _) = read("[BManifest]\nname = B\nversion = 1\nrequiredAlfaVersion = 1\n");
        let mut d = Diagnostics::default();
        check_dependencies(&[a.expect("A"), b.expect("B")], |n| n == "Linked", &mut d);
        let text = d.to_string();
        assert_eq!(d.warnings().count(), 1, "{text}");
        assert!(text.contains("depends on Gone"), "{text}");
    }
}
