//! Temporary files and directories, made by `tempfile`: each has a name no
//! other test (nor another run of the same test) can have, and is removed
//! on drop, with everything in it.
//!
//! - [`dir`]: a fresh, empty directory;
//! - [`TempFile`]: a file holding some text, and [`config_file`] for a
//!   node configuration;
//! - a path that must not exist is one inside a [`dir`]:
//!   `dir.path().join("missing")` exists only once the test makes it.

/// A fresh, empty directory in the system's temp directory, its name
/// starting with `zmanager-{name}-`; removed on drop with everything in
/// it.
pub fn dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("zmanager-{name}-"))
        .tempdir()
        .expect("create a temp directory")
}

/// A file in the system's temp directory, its name starting with
/// `zmanager-{name}-`; removed on drop (if it is still there).
#[derive(Debug)]
pub struct TempFile(tempfile::TempPath);

impl TempFile {
    /// Writes `text` to a fresh file named after `name`.
    pub fn new(name: &str, text: &str) -> Self {
        let mut file = tempfile::Builder::new()
            .prefix(&format!("zmanager-{name}-"))
            .tempfile()
            .expect("create a temp file");
        std::io::Write::write_all(&mut file, text.as_bytes()).expect("write the temp file");
        Self(file.into_temp_path())
    }

    /// Its path, as text: it goes on command lines and into payloads.
    pub fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

/// A node configuration file (TOML), removed on drop.
pub fn config_file(toml: &str) -> TempFile {
    TempFile::new("node.toml", toml)
}
