//! HTTP bearer tokens. A service's entry in `[security]` lists the SHA-256
//! digest of its token (`http_token = "sha256:…"`), never the token: the
//! configuration can be read, copied and committed without giving HTTP
//! access to whoever reads it. `zmanager keys token` makes a token and
//! prints its digest.
//!
//! A token is 32 random bytes from the operating system in hex: a digest
//! of it cannot be turned back into it, so comparing digests is as good as
//! comparing tokens, and looking one up by its digest leaks nothing useful
//! through its timing.

use sha2::{Digest, Sha256};

const PREFIX: &str = "sha256:";

/// The SHA-256 digest of `token`.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// `sha256:<hex>`, as the configuration lists it.
pub fn show_digest(token: &str) -> String {
    let hex: String = digest(token).iter().map(|b| format!("{b:02x}")).collect();
    format!("{PREFIX}{hex}")
}

/// Reads `sha256:<64 hex digits>`.
pub fn parse_digest(text: &str) -> Result<[u8; 32], String> {
    let hex = text.strip_prefix(PREFIX).ok_or_else(|| {
        format!("{text:?} is not `sha256:<64 hex digits>` (`zmanager keys token` prints one)")
    })?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{text:?}: the digest is not 64 hex digits"));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// A new token: 32 random bytes in hex.
pub fn new_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random bytes from the OS: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Makes a token and writes it to `path` (a new file, readable by its
/// owner only; an existing file is never overwritten). Returns its digest
/// as the configuration lists it.
pub fn write_new_token(path: &std::path::Path) -> Result<String, String> {
    use std::io::Write;
    let token = new_token()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    out.write_all(format!("{token}\n").as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(show_digest(&token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_reads_back_and_names_its_token_only() {
        let token = new_token().unwrap();
        assert_eq!(token.len(), 64);
        let shown = show_digest(&token);
        assert_eq!(parse_digest(&shown).unwrap(), digest(&token));
        assert_ne!(digest(&token), digest(&new_token().unwrap()));
        // The digest of "abc", from FIPS 180-2's examples.
        assert_eq!(
            show_digest("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_malformed_digest_is_refused_with_the_form_expected() {
        for bad in [
            "",
            "abc",
            "sha256:",
            "sha256:zz",
            &format!("sha256:{}", "g".repeat(64)),
        ] {
            assert!(parse_digest(bad).is_err(), "{bad:?}");
        }
        assert!(
            parse_digest("md5:00")
                .unwrap_err()
                .contains("zmanager keys token")
        );
    }
}
