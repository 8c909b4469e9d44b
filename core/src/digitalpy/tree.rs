//! The DigitalPy files under a directory: its flows, its components'
//! mapping files and manifests, its node configuration.
//!
//! The names are DigitalPy's conventions (each component's
//! `configuration/*_constants.py` names its files so):
//!
//! | file | what |
//! |---|---|
//! | `core_flows.ini`, `<name>_flows.ini` | flows |
//! | `external_action_mapping.ini` | a component's mappings, added to the application's |
//! | `internal_action_mapping.ini` | a component's own routing ([`crate::catalog::internal`]) |
//! | `manifest.ini` | a component's name, version, requirements ([`crate::catalog::manifest`]) |
//! | `configuration_management.ini` | the ZManager's sockets and workers ([`super::config`]) |
//!
//! Every other `.ini` is listed in a note: DigitalPy's object configuration
//! (`core_config.ini`: which Python class the object factory builds for
//! each name) has no meaning here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::catalog::diagnostic::{Diagnostics, Location};
use crate::catalog::source::{Format, SourceFile};
use crate::catalog::{internal, manifest};

/// The node configuration's file name.
pub const NODE_FILE: &str = "configuration_management.ini";
/// A component's external mapping file name.
pub const EXTERNAL_FILE: &str = "external_action_mapping.ini";

/// Directories never searched: Python's caches and environments, and
/// hidden ones.
const SKIPPED: [&str; 5] = [
    "__pycache__",
    "node_modules",
    "venv",
    "site-packages",
    "dist-packages",
];

/// How deep below the root files are looked for.
const MAX_DEPTH: usize = 8;

/// What a DigitalPy tree holds.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    pub root: PathBuf,
    /// Flow files, sorted by path.
    pub flows: Vec<SourceFile>,
    /// External and internal mapping files and manifests, sorted by path
    /// (the catalog tells them apart by name).
    pub mappings: Vec<SourceFile>,
    /// `configuration_management.ini`, the one nearest the root.
    pub node: Option<SourceFile>,
}

impl Tree {
    /// Finds the DigitalPy files under `root`. Unreadable files, a second
    /// node configuration and a tree without any DigitalPy file are
    /// reported in `diagnostics`.
    pub fn discover(root: &Path, diagnostics: &mut Diagnostics) -> Self {
        let mut paths = Vec::new();
        let root_name: Arc<str> = Arc::from(root.display().to_string());
        if let Err(e) = walk(root, 0, &mut paths) {
            diagnostics.error(
                Location::new(&root_name, 0),
                format!("cannot read directory: {e}"),
            );
            return Self::default();
        }
        // Nearest the root first, then by path: the node configuration
        // read is the shallowest.
        paths.sort_by_key(|p| (p.components().count(), p.clone()));
        let mut tree = Self {
            root: root.to_path_buf(),
            ..Self::default()
        };
        for path in paths {
            let name: Arc<str> = Arc::from(path.display().to_string());
            let file_name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) => {
                    diagnostics.error(Location::new(&name, 0), format!("cannot read: {e}"));
                    continue;
                }
            };
            let file = SourceFile::new(&name, text, Format::Ini);
            match file_name {
                NODE_FILE => match &tree.node {
                    None => tree.node = Some(file),
                    Some(first) => diagnostics.warning(
                        Location::new(&name, 0),
                        format!("not read: a second node configuration ({} is read)", first.name),
                    ),
                },
                EXTERNAL_FILE | internal::FILE_NAME | manifest::FILE_NAME => {
                    tree.mappings.push(file);
                }
                _ if file_name.ends_with("flows.ini") => tree.flows.push(file),
                // An application may override DigitalPy's settings in its
                // own `application_configuration.ini`: not read here.
                _ if file.text.contains("[ZManagerConfiguration]") => diagnostics.warning(
                    Location::new(&name, 0),
                    format!("not read: its [ZManagerConfiguration] (only {NODE_FILE}'s is read; put these settings there, or in the imported node.toml)"),
                ),
                _ if file.text.contains("__class") => diagnostics.note(
                    Location::new(&name, 0),
                    "not read: DigitalPy object configuration (`__class` names the Python class its object factory builds); no meaning here",
                ),
                _ => diagnostics.note(
                    Location::new(&name, 0),
                    "not read: not a DigitalPy flow, mapping, manifest or node configuration file",
                ),
            }
        }
        let by_name = |a: &SourceFile, b: &SourceFile| a.name.cmp(&b.name);
        tree.flows.sort_by(by_name);
        tree.mappings.sort_by(by_name);
        if tree.flows.is_empty() && tree.mappings.is_empty() && tree.node.is_none() {
            diagnostics.error(
                Location::new(&root_name, 0),
                format!(
                    "no DigitalPy files here: no *flows.ini, {EXTERNAL_FILE}, {}, {} or {NODE_FILE}",
                    internal::FILE_NAME,
                    manifest::FILE_NAME
                ),
            );
        }
        tree
    }
}

/// Every `.ini` file under `dir`, not following symbolic links.
fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if kind.is_dir() {
            if depth < MAX_DEPTH && !name.starts_with('.') && !SKIPPED.contains(&name.as_ref()) {
                // A subdirectory that cannot be read is skipped, as
                // DigitalPy's own scans do.
                let _ = walk(&path, depth + 1, out);
            }
        } else if kind.is_file() && name.ends_with(".ini") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temp directory, removed on
    /// drop (`core` has no `tempfile`).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("zmanager-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("mkdir");
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn finds_each_kind_of_file_and_notes_the_others() {
        let dir = Scratch::new("tree");
        let root = dir.0.as_path();
        let write = |rel: &str, text: &str| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        };
        write("core_flows.ini", "[F]\n?F?Push\n");
        write("core_config.ini", "[Subject]\n__class = a.B\n");
        write("configuration_management.ini", "[ZManagerConfiguration]\n");
        write(
            "files/configuration/external_action_mapping.ini",
            "[actionmapping]\n",
        );
        write(
            "files/configuration/internal_action_mapping.ini",
            "[actionmapping]\n",
        );
        write("files/configuration/manifest.ini", "[FilesManifest]\n");
        write("files/configuration/files_flows.ini", "[G]\n?G?Push\n");
        write("files/configuration/configuration_management.ini", "");
        write("files/__pycache__/x_flows.ini", "");
        write("notes.ini", "[a]\nb = c\n");
        let mut d = Diagnostics::default();
        let tree = Tree::discover(root, &mut d);
        assert_eq!(tree.flows.len(), 2);
        assert_eq!(tree.mappings.len(), 3);
        assert!(tree.node.as_ref().is_some_and(
            |n| n.name.ends_with("/configuration_management.ini") && !n.name.contains("files")
        ));
        let d = d.sorted();
        assert_eq!(
            (d.errors().count(), d.warnings().count(), d.notes().count()),
            (0, 1, 2),
            "{d}"
        );
        let mut d = Diagnostics::default();
        let empty = Scratch::new("tree-empty");
        Tree::discover(&empty.0, &mut d);
        assert!(
            d.to_string().contains("error: no DigitalPy files here"),
            "{d}"
        );
    }
}
