//! Writes a zmanager node out of a DigitalPy tree: `node.toml`, `flows/`
//! and `action_mappings/`.
//!
//! The flow files and the components' external mapping files are copied
//! unchanged (the catalog reads them as DigitalPy writes them), one
//! directory each, named after the component they come from. Internal
//! mappings and manifests are not copied (a node has no use for them);
//! the manifests are listed in `node.toml`'s comments, and
//! `zmanager check --digitalpy` reports on them in the original tree.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::catalog::internal;
use crate::catalog::manifest::Manifest;
use crate::catalog::source::SourceFile;
use crate::digitalpy::config::NodeSettings;
use crate::digitalpy::tree::{EXTERNAL_FILE, Tree};
use crate::node::config::NodeConfig;

/// The directories `node.toml` names, relative to it.
pub const FLOWS_DIR: &str = "flows";
pub const MAPPINGS_DIR: &str = "action_mappings";

/// Why a tree could not be imported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    #[error("{}: not empty; import into a new directory", .0.display())]
    NotEmpty(PathBuf),
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The written configuration does not read back: a bug of this module.
    #[error("the written configuration does not load: {0}")]
    Invalid(String),
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub config: PathBuf,
    pub flows: Vec<PathBuf>,
    pub mappings: Vec<PathBuf>,
}

/// A file name in `dir` not taken yet: `preferred`, else one made of the
/// source's whole relative path.
fn unique(
    taken: &mut BTreeSet<String>,
    preferred: String,
    file: &SourceFile,
    root: &Path,
) -> String {
    let name = if taken.contains(&preferred) {
        let relative = Path::new(&*file.name)
            .strip_prefix(root)
            .map_or_else(|_| file.name.to_string(), |p| p.display().to_string());
        relative.replace(['/', '\\'], ".")
    } else {
        preferred
    };
    taken.insert(name.clone());
    name
}

fn write(path: &Path, text: &str) -> Result<(), ImportError> {
    std::fs::write(path, text).map_err(|source| ImportError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn mkdir(path: &Path) -> Result<(), ImportError> {
    std::fs::create_dir_all(path).map_err(|source| ImportError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the node of `tree` (with `node`'s settings, or zmanager's
/// defaults) into `out`, a new or empty directory.
pub fn import(
    tree: &Tree,
    node: Option<&NodeSettings>,
    manifests: &[Manifest],
    out: &Path,
) -> Result<Imported, ImportError> {
    if std::fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ImportError::NotEmpty(out.to_path_buf()));
    }
    let flows_dir = out.join(FLOWS_DIR);
    let mappings_dir = out.join(MAPPINGS_DIR);
    mkdir(&flows_dir)?;
    mkdir(&mappings_dir)?;
    let mut imported = Imported {
        config: out.join("node.toml"),
        flows: Vec::new(),
        mappings: Vec::new(),
    };
    let mut taken = BTreeSet::new();
    for file in &tree.flows {
        let preferred = Path::new(&*file.name).file_name().map_or_else(
            || "flows.ini".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        let path = flows_dir.join(unique(&mut taken, preferred, file, &tree.root));
        write(&path, &file.text)?;
        imported.flows.push(path);
    }
    let mut taken = BTreeSet::new();
    for file in tree
        .mappings
        .iter()
        .filter(|f| f.name.ends_with(EXTERNAL_FILE))
    {
        let component = internal::component_of(&file.name);
        let preferred = if component.is_empty() {
            EXTERNAL_FILE.to_owned()
        } else {
            format!("{component}.ini")
        };
        let path = mappings_dir.join(unique(&mut taken, preferred, file, &tree.root));
        write(&path, &file.text)?;
        imported.mappings.push(path);
    }

    let root = std::path::absolute(&tree.root).unwrap_or_else(|_| tree.root.clone());
    let mut header = vec![format!("From {}.", root.display())];
    if !manifests.is_empty() {
        header
            .push("Its components' manifests (a component must be linked or loaded here):".into());
        for m in manifests {
            header.push(format!(
                "  {} {} (requires DigitalPy {}{}), {}",
                m.name,
                m.version.as_deref().unwrap_or("?"),
                m.required_alfa_version.as_deref().unwrap_or("?"),
                if m.dependencies.is_empty() {
                    String::new()
                } else {
                    format!("; depends on {}", m.dependencies.join(", "))
                },
                m.location.file
            ));
        }
    }
    let settings = node.cloned().unwrap_or_else(|| NodeSettings {
        file: "-".into(),
        endpoints: Default::default(),
        workers: None,
        carried: Vec::new(),
        dropped: Vec::new(),
    });
    let toml = settings.to_toml(&header, FLOWS_DIR, MAPPINGS_DIR);
    write(&imported.config, &toml)?;
    NodeConfig::from_file(&imported.config).map_err(|e| ImportError::Invalid(e.to_string()))?;
    Ok(imported)
}
