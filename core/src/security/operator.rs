//! The operator cookie: a secret the node keeps in its data directory
//! (`operator.cookie`, readable by its owner only), which the node's own
//! tools present to do what a service may not — resume a request at any
//! step of its flow (`zmanager dlq replay`, `zmanager journal replay`).
//!
//! Whoever can read the data directory can read the journal and the dead
//! letters anyway, so the cookie gives no one more than the files already
//! do: the same trust boundary as RabbitMQ's Erlang cookie for its CLI.
//! The node makes one at its first start and keeps it across restarts.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The file the cookie is kept in, in `data_dir`.
pub fn cookie_path(data_dir: &Path) -> PathBuf {
    data_dir.join("operator.cookie")
}

/// The node's operator cookie.
#[derive(Clone)]
pub struct OperatorCookie(String);

impl std::fmt::Debug for OperatorCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorCookie(..)")
    }
}

/// Why the cookie could not be made or read.
#[derive(Debug, thiserror::Error)]
#[error("operator cookie {path}: {reason}")]
pub struct CookieError {
    pub path: String,
    pub reason: String,
}

impl OperatorCookie {
    /// The cookie of `data_dir`, made (32 random bytes, hex) if there is
    /// none yet.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, CookieError> {
        let path = cookie_path(data_dir);
        match Self::read(data_dir) {
            Ok(cookie) => return Ok(cookie),
            Err(_) if !path.exists() => {}
            Err(e) => return Err(e),
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| error(&path, e))?;
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::create_dir_all(data_dir).map_err(|e| error(&path, e))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(|e| error(&path, e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| error(&path, e))?;
        Ok(Self(text))
    }

    /// The cookie of `data_dir`, as the node's tools read it.
    pub fn read(data_dir: &Path) -> Result<Self, CookieError> {
        let path = cookie_path(data_dir);
        let text = std::fs::read_to_string(&path).map_err(|e| error(&path, e))?;
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(error(&path, "not a cookie (64 hex digits expected)"));
        }
        Ok(Self(text.to_owned()))
    }

    /// The cookie as it travels in a request's `operator` field.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `presented` is this cookie; it takes as long whatever
    /// bytes of it differ.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    }
}

fn error(path: &Path, reason: impl std::fmt::Display) -> CookieError {
    CookieError {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("zm-cookie-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn made_once_kept_and_only_its_owner_reads_it() {
        let dir = scratch("kept");
        let first = OperatorCookie::load_or_create(&dir).unwrap();
        let again = OperatorCookie::load_or_create(&dir).unwrap();
        assert_eq!(first.as_str(), again.as_str());
        assert!(first.matches(OperatorCookie::read(&dir).unwrap().as_str()));
        assert_eq!(first.as_str().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(cookie_path(&dir))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = OperatorCookie::load_or_create(&scratch("other")).unwrap();
        assert_ne!(first.as_str(), other.as_str());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_the_cookie_matches() {
        let dir = scratch("matches");
        let cookie = OperatorCookie::load_or_create(&dir).unwrap();
        assert!(cookie.matches(cookie.as_str()));
        let mut wrong = cookie.as_str().to_owned().into_bytes();
        wrong[63] = if wrong[63] == b'0' { b'1' } else { b'0' };
        assert!(!cookie.matches(std::str::from_utf8(&wrong).unwrap()));
        assert!(!cookie.matches(""));
        assert!(!cookie.matches(&cookie.as_str()[..63]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_cookie_is_an_error_not_replaced() {
        let dir = scratch("damaged");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(cookie_path(&dir), "short").unwrap();
        let e = OperatorCookie::load_or_create(&dir).unwrap_err();
        assert!(e.to_string().contains("64 hex digits expected"), "{e}");
        assert_eq!(std::fs::read_to_string(cookie_path(&dir)).unwrap(), "short");
        let e = OperatorCookie::read(&scratch("missing")).unwrap_err();
        assert!(e.to_string().contains("operator.cookie"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
