//! A small disk for a test: a tmpfs of a given size mounted on a fresh
//! directory, so that a node's data directory can fill up. Mounting needs
//! root (CI runs as root); it is unmounted on drop.

use std::path::Path;
use std::process::Command;

/// A tmpfs mounted on a directory of its own; unmounted and removed on
/// drop.
#[derive(Debug)]
pub struct SmallDisk {
    /// The mount point, a temp directory: removed once unmounted.
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (as `mount -o size=…` takes it: `"4m"`) on
    /// a fresh directory in the temp directory. The error says why not
    /// (typically: not root).
    pub fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("zmanager-small-disk-")
            .tempdir()
            .map_err(|e| format!("create a temp directory: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        // Not mounted: `dir` is removed as it drops.
        match out {
            Ok(out) if out.status.success() => Ok(Self { dir }),
            Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
            Err(e) => Err(format!("run mount: {e}")),
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a process of the test not reaped yet): detach it
            // now, the kernel frees it when the last file closes.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
        // `dir`, empty now, is removed as it drops after this.
    }
}
