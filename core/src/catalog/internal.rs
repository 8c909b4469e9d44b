//! DigitalPy internal action mappings (`configuration/internal_action_mapping.ini`):
//! how a component routes actions among its own controllers.
//!
//! A DigitalPy component has two mapping files. Its **external** one
//! (`external_action_mapping.ini`) is added to the application's mappings
//! and routes a step to the component's facade
//! (`DigitalPy.register_core_components`,
//! `ComponentInstallationController.register_component`); it loads here as
//! any mapping file does. Its **internal** one builds the facade's own
//! action mapper (`DefaultFacade.get_action_mapper`), which the facade uses
//! when it hands an action on to one of its controllers
//! (`Controller.execute_sub_action`, or `DefaultFacade.execute` for an
//! action it has no method for):
//!
//! ```ini
//! [actionmapping]
//! Files??Type = core.files.controllers.files_controller.FilesController.evaluate_request
//! ??ParseFiles = core.files.controllers.files_controller.FilesController.parse_files
//!
//! [Request]
//! __class = digitalpy.routing.impl.default_request.DefaultRequest
//! [ActionMapper]
//! __class = digitalpy.routing.impl.default_action_mapper.DefaultActionMapper
//! ```
//!
//! Its other sections are object-factory bindings: `__class` names the
//! Python class the component builds for a `Request`, a `Response`, its
//! `ActionMapper`, its `event_manager`.
//!
//! Neither part has a meaning in zmanager: a component is a crate, and
//! routes an action to its own code itself (`component!` lists its
//! functions); nothing is built from a class name. So the file is read and
//! its keys checked with the same grammar as every other key (a malformed
//! one is an error with its line), and `zmanager check` says, in a note,
//! what it holds and that it is not added to the node's mappings: the same
//! key in a component's external and internal files (DigitalPy's Domain
//! and IAM have some) is not mapped twice.

use std::sync::Arc;

use crate::catalog::action_key::ActionKey;
use crate::catalog::diagnostic::{Diagnostics, Location};
use crate::catalog::ini;
use crate::catalog::mapping::Target;

/// The file name DigitalPy gives a component's internal mapping.
pub const FILE_NAME: &str = "internal_action_mapping.ini";

/// What one internal mapping file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalMappings {
    /// The component, from the file's path (`<component>/configuration/…`).
    pub component: String,
    pub file: Arc<str>,
    /// Each key and the Python target it names, as written.
    pub mappings: Vec<(ActionKey, String, Location)>,
    /// The object-factory sections (`[Request]`, `[ActionMapper]`…).
    pub bindings: Vec<(String, Location)>,
}

/// The component a DigitalPy configuration file belongs to: the directory
/// above its `configuration/` directory, else its own directory.
pub fn component_of(path: &str) -> String {
    let parts: Vec<&str> = path.split(['/', '\\']).filter(|p| !p.is_empty()).collect();
    let n = parts.len();
    let dir = match n {
        0 | 1 => "",
        _ if n >= 3 && parts[n - 2] == "configuration" => parts[n - 3],
        _ => parts[n - 2],
    };
    dir.to_owned()
}

/// Reads an internal mapping file.
pub fn load_ini(file: &Arc<str>, text: &str, diagnostics: &mut Diagnostics) -> InternalMappings {
    let mut out = InternalMappings {
        component: component_of(file),
        file: Arc::clone(file),
        mappings: Vec::new(),
        bindings: Vec::new(),
    };
    let mut mapping_line = None;
    for section in ini::parse(file, text, diagnostics) {
        let at = Location::new(file, section.line);
        if section.name != "actionmapping" {
            out.bindings.push((section.name, at));
            continue;
        }
        mapping_line.get_or_insert(section.line);
        for entry in section.entries {
            let location = Location::new(file, entry.line);
            let key = match ActionKey::parse(&entry.key) {
                Ok(key) => key,
                Err(e) => {
                    diagnostics.error(
                        location,
                        format!("malformed action key {:?}: {e}", entry.key),
                    );
                    continue;
                }
            };
            let target = entry.value.unwrap_or_default();
            if target.is_empty() {
                diagnostics.warning(
                    location,
                    format!("internal mapping `{key}` has no target; DigitalPy skips such a line"),
                );
                continue;
            }
            if let Err(e) = Target::parse(&target) {
                diagnostics.warning(
                    location.clone(),
                    format!(
                        "internal mapping `{key}`: {e}; DigitalPy would fail to import it when the action is called"
                    ),
                );
            }
            out.mappings.push((key, target, location));
        }
    }
    let component = if out.component.is_empty() {
        String::new()
    } else {
        format!(" of component {}", out.component)
    };
    if let Some(line) = mapping_line {
        diagnostics.note(
            Location::new(file, line),
            format!(
                "internal action mapping{component} ({} key{}): DigitalPy routes these inside the component, from its facade to its controllers; a zmanager component routes its actions in its own code, so they are checked but not added to the node's mappings",
                out.mappings.len(),
                if out.mappings.len() == 1 { "" } else { "s" }
            ),
        );
    }
    if let Some((_, first)) = out.bindings.first() {
        let names: Vec<String> = out.bindings.iter().map(|(n, _)| format!("[{n}]")).collect();
        diagnostics.note(
            first.clone(),
            format!(
                "{}: DigitalPy object-factory bindings (`__class` names a Python class to build); no meaning here, not loaded",
                names.join(", ")
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_component_comes_from_the_path() {
        assert_eq!(
            component_of("core/IAM/configuration/internal_action_mapping.ini"),
            "IAM"
        );
        assert_eq!(
            component_of("/x/files/internal_action_mapping.ini"),
            "files"
        );
        assert_eq!(component_of("internal_action_mapping.ini"), "");
    }

    #[test]
    fn reads_keys_and_bindings_and_says_what_they_are() {
        let file: Arc<str> = Arc::from("d/files/configuration/internal_action_mapping.ini");
        let mut d = Diagnostics::default();
        let text = "[actionmapping]\nFiles??Type = core.files.controllers.files_controller.FilesController.evaluate_request\n\n; a comment\n??^file^x = a.B.c\n??NodeToXML =  = Free.Odd.nod_to_xml\n??bad key = a.B.c\n\n[Request]\n__class = digitalpy.routing.impl.default_request.DefaultRequest\n[ActionMapper]\n__class = x.Y\n";
        let read = load_ini(&file, text, &mut d);
        assert_eq!(read.component, "files");
        assert_eq!(read.mappings.len(), 3);
        assert_eq!(read.bindings.len(), 2);
        let all: Vec<String> = d.sorted().iter().map(ToString::to_string).collect();
        assert_eq!(all.len(), 4, "{all:#?}");
        assert!(all[0].starts_with("d/files/configuration/internal_action_mapping.ini:1: note: internal action mapping of component files (3 keys)"), "{all:#?}");
        assert!(
            all[1].contains(":6: warning: internal mapping `??NodeToXML`"),
            "{all:#?}"
        );
        assert!(
            all[2].contains(":7: error: malformed action key \"??bad key\""),
            "{all:#?}"
        );
        assert!(
            all[3]
                .contains(":9: note: [Request], [ActionMapper]: DigitalPy object-factory bindings"),
            "{all:#?}"
        );
    }
}
