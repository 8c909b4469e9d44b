//! CurveZMQ keys, a client's side: a key in Z85, a new pair, and the three
//! keys a client connects with ([`ClientKeys`]). The node's side (its
//! `[security]` table, key files, which key is which service) is
//! `zmanager::security`, which re-exports these.

/// A CURVE key, 32 bytes (40 characters in Z85).
pub type Key = [u8; 32];

/// A key in Z85.
pub fn z85(key: &Key) -> String {
    zmq::z85_encode(key).unwrap_or_default()
}

/// The 85 characters of Z85 (ZeroMQ RFC 32).
const Z85: &str =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// A Z85 key, or what is wrong with it.
pub fn parse_key(text: &str) -> Result<Key, String> {
    let text = text.trim();
    if text.len() != 40 {
        return Err(format!(
            "a key is 40 Z85 characters, this is {}",
            text.len()
        ));
    }
    if let Some(bad) = text.chars().find(|c| !Z85.contains(*c)) {
        return Err(format!("not Z85: {bad:?} is not a Z85 character"));
    }
    let bytes = zmq::z85_decode(text).map_err(|e| format!("not Z85: {e}"))?;
    Key::try_from(bytes.as_slice()).map_err(|_| "not a 32-byte key".to_owned())
}

/// A new key pair (public, secret), from libzmq.
pub fn new_pair() -> Result<(Key, Key), String> {
    let pair = zmq::CurveKeyPair::new()
        .map_err(|e| format!("libzmq cannot make CURVE keys ({e}): it was built without CURVE"))?;
    Ok((pair.public_key, pair.secret_key))
}

/// A client's CURVE keys: its own pair and the public key of the node it
/// connects to (the handshake fails unless the node has that key).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKeys {
    pub server: Key,
    pub public: Key,
    pub secret: Key,
}

impl ClientKeys {
    /// The three keys on one line, in Z85, as a worker reads them on its
    /// stdin (`zmanager worker --keys-on-stdin`): server, public, secret.
    pub fn to_line(&self) -> String {
        format!(
            "{} {} {}\n",
            z85(&self.server),
            z85(&self.public),
            z85(&self.secret)
        )
    }

    /// The keys of a line [`ClientKeys::to_line`] wrote.
    pub fn from_line(line: &str) -> Result<Self, String> {
        let keys: Vec<&str> = line.split_whitespace().collect();
        let [server, public, secret] = keys[..] else {
            return Err(format!(
                "expected three keys (server, public, secret), got {}",
                keys.len()
            ));
        };
        Ok(Self {
            server: parse_key(server).map_err(|e| format!("server key: {e}"))?,
            public: parse_key(public).map_err(|e| format!("public key: {e}"))?,
            secret: parse_key(secret).map_err(|e| format!("secret key: {e}"))?,
        })
    }
}

/// Never the secret key.
impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKeys")
            .field("server", &z85(&self.server))
            .field("public", &z85(&self.public))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_z85() {
        let (public, secret) = new_pair().unwrap();
        assert_ne!(public, secret);
        assert_eq!(parse_key(&z85(&public)).unwrap(), public);
        assert_eq!(z85(&public).len(), 40);
        assert!(
            parse_key("short")
                .unwrap_err()
                .contains("40 Z85 characters")
        );
        assert!(parse_key(&"\"".repeat(40)).unwrap_err().contains("not Z85"));
    }

    #[test]
    fn client_keys_round_trip_through_a_line_and_hide_the_secret() {
        let (server, _) = new_pair().unwrap();
        let (public, secret) = new_pair().unwrap();
        let keys = ClientKeys {
            server,
            public,
            secret,
        };
        assert_eq!(ClientKeys::from_line(&keys.to_line()).unwrap(), keys);
        assert!(!format!("{keys:?}").contains(&z85(&secret)));
        assert!(
            ClientKeys::from_line("one two")
                .unwrap_err()
                .contains("got 2")
        );
    }
}
