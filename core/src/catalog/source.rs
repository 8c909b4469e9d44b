//! Configuration files as read from disk (or embedded in the binary), before
//! parsing: a name for diagnostics, the text, and the format.

use std::path::Path;
use std::sync::Arc;

use crate::catalog::diagnostic::{Diagnostics, Location};

/// The two configuration formats, chosen by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Ini,
    Toml,
}

/// One configuration file's text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceFile {
    pub name: Arc<str>,
    pub text: String,
    pub format: Format,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Ini => "ini",
            Format::Toml => "toml",
        }
    }

    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "ini" => Some(Format::Ini),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }
}

impl SourceFile {
    pub fn new(name: &str, text: impl Into<String>, format: Format) -> Self {
        Self {
            name: Arc::from(name),
            text: text.into(),
            format,
        }
    }

    /// Every `.ini` and `.toml` file directly in `dir`, sorted by name.
    /// Other files are skipped with a warning; an unreadable directory or
    /// file is an error.
    pub fn read_dir(dir: &Path, diagnostics: &mut Diagnostics) -> Vec<SourceFile> {
        let dir_name: Arc<str> = Arc::from(dir.display().to_string());
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                diagnostics.error(
                    Location::new(&dir_name, 0),
                    format!("cannot read directory: {e}"),
                );
                return Vec::new();
            }
        };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        let mut files = Vec::new();
        for path in paths {
            let name: Arc<str> = Arc::from(path.display().to_string());
            let Some(format) = Format::from_path(&path) else {
                diagnostics.warning(
                    Location::new(&name, 0),
                    "skipped: only .ini and .toml files are read",
                );
                continue;
            };
            match std::fs::read_to_string(&path) {
                Ok(text) => files.push(SourceFile { name, text, format }),
                Err(e) => diagnostics.error(Location::new(&name, 0), format!("cannot read: {e}")),
            }
        }
        files
    }
}
