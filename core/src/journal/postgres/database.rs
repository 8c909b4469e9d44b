//! Where the journal's database is and how to reach it: a libpq connection
//! string, with TLS when it names the certificate authorities to trust.
//!
//! rust-postgres knows `sslmode` `disable`, `prefer` and `require`, and
//! leaves certificates to the TLS connector. libpq's own way to ask for a
//! verified connection is `sslmode=verify-full sslrootcert=FILE`; that is
//! what a user writes, so it is taken here: `sslrootcert` (a PEM file of
//! certificate authorities) makes the connection TLS (rustls), required,
//! with the server's certificate verified against those authorities and
//! its name against the host's. Without it there is no TLS, and asking for
//! TLS anyway (`sslmode=require`, `verify-ca`, `verify-full`) is an error:
//! a connection zmanager cannot verify is not one it encrypts.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;

use postgres::config::SslMode;
use postgres::{Client, Config, NoTls};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio_postgres_rustls::MakeRustlsConnect;

/// A database: its client configuration and, with `sslrootcert`, the TLS
/// connector.
#[derive(Clone)]
pub(super) struct Database {
    pub(super) config: Config,
    tls: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Parses a connection string: a `postgres://` URL or `key=value`
    /// pairs, with libpq's `sslrootcert` and `sslmode=verify-full` (or
    /// `verify-ca`, taken as `verify-full`).
    pub(super) fn parse(conninfo: &str) -> Result<Self, String> {
        let (rest, root, mode) = split_tls(conninfo)?;
        let mut config = Config::from_str(&rest)
            .map_err(|e| format!("[journal] url is not a PostgreSQL connection string: {e}"))?;
        let tls = match (root, mode.as_deref()) {
            (Some(root), _) => {
                config.ssl_mode(SslMode::Require);
                Some(connector(&root)?)
            }
            (None, Some(mode @ ("require" | "verify-ca" | "verify-full"))) => {
                return Err(format!(
                    "[journal] url asks for TLS (sslmode={mode}) but names no sslrootcert: zmanager encrypts only a connection it verifies; add sslrootcert=/path/to/ca.pem (the certificate authorities of the database's certificate)"
                ));
            }
            (None, _) => None,
        };
        Ok(Self { config, tls })
    }

    /// Whether connections are TLS.
    pub(super) fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A new connection.
    pub(super) fn connect(&self) -> Result<Client, postgres::Error> {
        match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        }
    }
}

/// A rustls connector trusting the authorities in the PEM file `root`.
fn connector(root: &Path) -> Result<MakeRustlsConnect, String> {
    let shown = root.display();
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(root)
        .map_err(|e| format!("[journal] url's sslrootcert {shown}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("[journal] url's sslrootcert {shown}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(format!(
            "[journal] url's sslrootcert {shown} holds no certificate"
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// `conninfo` without `sslrootcert` and a `verify-*` `sslmode` (which
/// rust-postgres does not know), and those two.
fn split_tls(conninfo: &str) -> Result<(String, Option<PathBuf>, Option<String>), String> {
    let mut root = None;
    let mut mode = None;
    let mut take = |key: &str, value: &str| -> bool {
        match key {
            "sslrootcert" => {
                root = Some(PathBuf::from(value));
                false
            }
            "sslmode" => {
                mode = Some(value.to_owned());
                !value.starts_with("verify-")
            }
            _ => true,
        }
    };
    let rest = if let Some((base, query)) = conninfo
        .strip_prefix("postgres://")
        .or_else(|| conninfo.strip_prefix("postgresql://"))
        .and_then(|_| conninfo.split_once('?'))
    {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
                take(key, &value)
            })
            .collect();
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else if conninfo.contains("://") {
        conninfo.to_owned()
    } else {
        let mut kept = Vec::new();
        for (key, value, text) in pairs(conninfo)? {
            if take(key, &value) {
                kept.push(text);
            }
        }
        kept.join(" ")
    };
    Ok((rest, root, mode))
}

/// The `key=value` pairs of a libpq connection string, each with its
/// value unquoted and its text as written.
fn pairs(conninfo: &str) -> Result<Vec<(&str, String, &str)>, String> {
    let mut out = Vec::new();
    let mut rest = conninfo.trim_start();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("[journal] url: `{rest}` is not key=value"))?;
        let key = rest[..eq].trim_end();
        let mut value = String::new();
        let after = rest[eq + 1..].trim_start();
        let mut end = after.len();
        if let Some(quoted) = after.strip_prefix('\'') {
            let mut chars = quoted.char_indices();
            end = loop {
                match chars.next() {
                    Some((_, '\\')) => {
                        if let Some((_, c)) = chars.next() {
                            value.push(c);
                        }
                    }
                    Some((i, '\'')) => break i + 2,
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("[journal] url: unterminated quote after {key}=")),
                }
            };
        } else {
            if let Some(space) = after.find(char::is_whitespace) {
                end = space;
            }
            value.push_str(&after[..end]);
        }
        let start = rest.len() - rest.trim_start().len();
        let text_end = rest.len() - after.len() + end;
        out.push((key, value, rest[start..text_end].trim()));
        rest = after[end..].trim_start();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_settings_are_taken_out_of_either_form() {
        for (conninfo, rest, root, mode) in [
            ("host=/tmp dbname=d", "host=/tmp dbname=d", None, None),
            (
                "host=db.example sslmode=verify-full sslrootcert='/etc/z m/ca.pem' user=z",
                "host=db.example user=z",
                Some("/etc/z m/ca.pem"),
                Some("verify-full"),
            ),
            (
                "host=h sslmode=require password='it\\'s'",
                "host=h sslmode=require password='it\\'s'",
                None,
                Some("require"),
            ),
            (
                "postgres://z@db/d?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
                "postgres://z@db/d",
                Some("/etc/ca.pem"),
                Some("verify-full"),
            ),
            (
                "postgresql://z@db/d?application_name=a&sslrootcert=/ca.pem",
                "postgresql://z@db/d?application_name=a",
                Some("/ca.pem"),
                None,
            ),
            ("postgres://z@db/d", "postgres://z@db/d", None, None),
        ] {
            let (got, got_root, got_mode) = split_tls(conninfo).unwrap();
            assert_eq!(got, rest, "{conninfo}");
            assert_eq!(got_root.as_deref(), root.map(Path::new), "{conninfo}");
            assert_eq!(got_mode.as_deref(), mode, "{conninfo}");
            assert!(Config::from_str(&got).is_ok(), "{got}");
        }
        assert!(split_tls("host='unterminated").is_err());
    }

    #[test]
    fn tls_is_refused_without_authorities_to_verify_with() {
        for mode in ["require", "verify-ca", "verify-full"] {
            let e = Database::parse(&format!("host=h sslmode={mode}")).unwrap_err();
            assert!(e.contains("names no sslrootcert"), "{e}");
        }
        assert!(!Database::parse("host=h sslmode=prefer").unwrap().tls());
        let e = Database::parse("host=h sslrootcert=/no/such/ca.pem").unwrap_err();
        assert!(e.contains("/no/such/ca.pem"), "{e}");
    }
}
