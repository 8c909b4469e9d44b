//! CurveZMQ keys: the node's own pair and the services it knows, each
//! public key bound to one service id (`[security]` in the node's
//! configuration, `docs/security.md`).
//!
//! ```toml
//! [security]
//! key_file = "node.key"     # the node's key pair: `zmanager keys new node`
//!
//! [[security.service]]
//! id = "ada"
//! public_key = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
//! ```
//!
//! With it, the intake and publish sockets speak CURVE only: a peer whose
//! key is not listed cannot connect, and a request's `service` must be the
//! id its key is bound to.

pub mod operator;
pub mod token;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A key, Z85 and new pairs: the client's side of keys, defined once in
/// the client crate.
pub use zmanager_client::keys::{Key, new_pair, parse_key, z85};

/// `[security]` as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// The node's key pair, a [`KeyFile`] (relative paths are relative to
    /// the configuration file).
    pub key_file: PathBuf,
    /// The services allowed to connect.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceKey>,
    /// Public keys of workers started by hand (`zmanager worker
    /// --key-file`). The node's own workers need no entry: it makes their
    /// keys at each start.
    #[serde(default)]
    pub workers: Vec<String>,
}

/// A key pair's file, as `zmanager keys new` writes it (TOML, readable by
/// its owner only). The public key alone goes in a `.pub` file beside it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub public_key: String,
    pub secret_key: String,
}

/// One service: its id, the public key it connects with, and what it may
/// read besides its own results.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceKey {
    pub id: String,
    /// The CURVE public key it connects to the sockets with; empty: it
    /// uses HTTP only (`http_token`).
    #[serde(default)]
    pub public_key: String,
    /// Topic prefixes it may subscribe to (a subscription must start with
    /// one of them): `["Announce~"]` for every `@PUBLISH` step of the
    /// Announce flow, `["Greeting~~~~done"]` for its shared results, `[""]`
    /// for everything. Its own `@reply~ID~` needs no entry.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// The flows it may push requests into (`"*"`: every flow). Default:
    /// none.
    #[serde(default)]
    pub push: Vec<String>,
    /// The `@ASYNC` steps it may answer: a flow's name (each of its
    /// `@ASYNC` steps) or a step's key exactly. Default: none.
    #[serde(default)]
    pub answer: Vec<String>,
    /// Whether it may use service management (register, heartbeat, list,
    /// topics). Default: no.
    #[serde(default)]
    pub register: bool,
    /// Whether it may operate the node over HTTP: list, show and replay
    /// dead letters, list its workers. Default: no.
    #[serde(default)]
    pub operate: bool,
    /// The SHA-256 digest of the bearer token it makes HTTP requests with
    /// (`sha256:<64 hex digits>`, as `zmanager keys token` prints it);
    /// `None`: it has no HTTP access.
    #[serde(default)]
    pub http_token: Option<String>,
}

/// What each service may do (`[security]`): push, answer and register at
/// the intake, subscribe on the publish socket; everything, for every
/// service, on a node without keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// `None`: no keys (the node is on loopback and trusts its peers).
    by_service: Option<BTreeMap<String, ServiceKey>>,
}

impl Permissions {
    /// Everyone may do everything: a node without `[security]`.
    pub fn open() -> Self {
        Self { by_service: None }
    }

    /// What `[security]` grants each service.
    pub fn of(config: &SecurityConfig) -> Self {
        let by_service = config
            .services
            .iter()
            .map(|s| (s.id.clone(), s.clone()))
            .collect();
        Self {
            by_service: Some(by_service),
        }
    }

    fn grants(&self, service: &str) -> Option<Option<&ServiceKey>> {
        self.by_service.as_ref().map(|all| all.get(service))
    }

    /// True when `service` may push requests into `flow`.
    pub fn may_push(&self, service: &str, flow: &str) -> bool {
        match self.grants(service) {
            None => true,
            Some(grants) => grants.is_some_and(|g| g.push.iter().any(|f| f == "*" || f == flow)),
        }
    }

    /// True when `service` may answer the `@ASYNC` step `step` of `flow`.
    pub fn may_answer(&self, service: &str, flow: &str, step: &str) -> bool {
        match self.grants(service) {
            None => true,
            Some(grants) => grants.is_some_and(|g| g.answer.iter().any(|a| a == flow || a == step)),
        }
    }

    /// True when `service` (the id its key is bound to; `None` on a socket
    /// without keys) may subscribe to `prefix`: every topic the
    /// subscription matches must be one it may read — its own results, or
    /// topics starting with one of its `subscribe` grants.
    pub fn may_read(&self, service: Option<&str>, prefix: &[u8]) -> bool {
        let Some(all) = &self.by_service else {
            return true;
        };
        let Some(service) = service else {
            return false;
        };
        crate::catalog::topic::starts_with_reply_topic(prefix, service)
            || all
                .get(service)
                .is_some_and(|g| g.subscribe.iter().any(|p| prefix.starts_with(p.as_bytes())))
    }

    /// True when `service` may use service management.
    pub fn may_register(&self, service: &str) -> bool {
        match self.grants(service) {
            None => true,
            Some(grants) => grants.is_some_and(|g| g.register),
        }
    }

    /// True when `service` may operate the node (`operate = true`): its
    /// dead letters and workers over HTTP.
    pub fn may_operate(&self, service: &str) -> bool {
        match self.grants(service) {
            None => true,
            Some(grants) => grants.is_some_and(|g| g.operate),
        }
    }
}

/// The keys a node serves with, read and checked.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    pub public: Key,
    pub secret: Key,
    /// Each service's id, by its public key.
    pub services: BTreeMap<Key, String>,
    /// The public keys of workers started by hand.
    pub workers: std::collections::BTreeSet<Key>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("public", &z85(&self.public))
            .field("services", &self.services.values().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SecurityConfig {
    /// Problems a configuration has before any file is read.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut ids = BTreeMap::new();
        let mut keys = BTreeMap::new();
        for service in &self.services {
            let id = &service.id;
            if id.is_empty() || !id.chars().all(crate::catalog::action_key::is_field_char) {
                problems.push(format!(
                    "security.service id {id:?}: use letters, digits, `_`, `-` and `.`"
                ));
            }
            if ids.insert(id.clone(), ()).is_some() {
                problems.push(format!("security.service {id:?} is listed twice"));
            }
            if let Some(token) = &service.http_token
                && let Err(e) = token::parse_digest(token)
            {
                problems.push(format!("security.service {id:?}: http_token: {e}"));
            }
            if service.public_key.is_empty() {
                if service.http_token.is_none() {
                    problems.push(format!(
                        "security.service {id:?} has neither a public_key nor an http_token: it could not connect"
                    ));
                }
                continue;
            }
            match parse_key(&service.public_key) {
                Ok(key) => {
                    if let Some(other) = keys.insert(key, id.clone()) {
                        problems.push(format!(
                            "security.service {id:?} has the public key of {other:?}: a key names one service"
                        ));
                    }
                }
                Err(e) => problems.push(format!("security.service {id:?}: public_key: {e}")),
            }
        }
        for (i, key) in self.workers.iter().enumerate() {
            match parse_key(key) {
                Ok(key) => {
                    if let Some(service) = keys.get(&key) {
                        problems.push(format!(
                            "security.workers[{i}] is the public key of service {service:?}: a worker needs a key of its own"
                        ));
                    }
                }
                Err(e) => problems.push(format!("security.workers[{i}]: {e}")),
            }
        }
        problems
    }

    /// Makes `key_file` relative to `base` (the configuration's folder)
    /// when it is relative.
    pub fn resolve(&mut self, base: &Path) {
        if self.key_file.is_relative() {
            self.key_file = base.join(&self.key_file);
        }
    }

    /// Reads the node's key pair and the services' keys.
    pub fn load(&self) -> Result<Keys, String> {
        let pair = read_key_file(&self.key_file)?;
        let services = self
            .services
            .iter()
            .filter_map(|s| Some((parse_key(&s.public_key).ok()?, s.id.clone())))
            .collect();
        let workers = self
            .workers
            .iter()
            .filter_map(|k| parse_key(k).ok())
            .collect();
        Ok(Keys {
            public: pair.0,
            secret: pair.1,
            services,
            workers,
        })
    }
}

impl SecurityConfig {
    /// Warns of each step given to a service that `[security]` does not
    /// list: with keys, only a listed service can take it, so such a step
    /// would hold every request that reaches it.
    pub fn check_steps(
        &self,
        catalog: &crate::catalog::Catalog,
        diagnostics: &mut crate::catalog::diagnostic::Diagnostics,
    ) {
        for routed in catalog.flows.values() {
            for (step, (role, _)) in routed.flow.steps.iter().zip(&routed.roles) {
                if let crate::catalog::StepRole::Service(name) = role
                    && !self.services.iter().any(|s| &s.id == name)
                {
                    diagnostics.warning(
                        step.location.clone(),
                        format!(
                            "step `{}` of flow {} is given to service {name:?}, which [security] does not list: no one can take it, and every request reaching it waits",
                            step.key, routed.flow.name
                        ),
                    );
                }
            }
        }
    }
}

/// The (public, secret) keys of a key file.
pub fn read_key_file(path: &Path) -> Result<(Key, Key), String> {
    let name = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("key file {name}: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(file = %name, "a secret key file is readable by other users: chmod 600 it");
        }
    }
    let file: KeyFile = toml::from_str(&text).map_err(|e| format!("key file {name}: {e}"))?;
    let public =
        parse_key(&file.public_key).map_err(|e| format!("key file {name}: public_key: {e}"))?;
    let secret =
        parse_key(&file.secret_key).map_err(|e| format!("key file {name}: secret_key: {e}"))?;
    Ok((public, secret))
}

/// A public key given as its Z85 text, or as the file holding it (a
/// `.pub` or `.key` file as `zmanager keys new` writes them).
pub fn read_public_key(text_or_path: &str) -> Result<Key, String> {
    if let Ok(key) = parse_key(text_or_path) {
        return Ok(key);
    }
    let path = Path::new(text_or_path);
    if !path.exists() {
        let why = parse_key(text_or_path).err().unwrap_or_default();
        return Err(format!(
            "{text_or_path:?} is neither a key ({why}) nor a file"
        ));
    }
    #[derive(Deserialize)]
    struct Public {
        public_key: String,
    }
    let name = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    let file: Public = toml::from_str(&text).map_err(|e| format!("{name}: {e}"))?;
    parse_key(&file.public_key).map_err(|e| format!("{name}: public_key: {e}"))
}

/// Writes a new key pair to `PREFIX.key` (both keys, owner-only) and
/// `PREFIX.pub` (the public key); returns the public key. Neither file may
/// exist already.
pub fn write_new_pair(prefix: &Path) -> Result<Key, String> {
    use std::io::Write;
    let (public, secret) = new_pair()?;
    let with = |ext: &str| {
        let mut name = prefix.as_os_str().to_owned();
        name.push(ext);
        PathBuf::from(name)
    };
    let (key_path, pub_path) = (with(".key"), with(".pub"));
    let file = KeyFile {
        public_key: z85(&public),
        secret_key: z85(&secret),
    };
    let body = toml::to_string(&file).map_err(|e| e.to_string())?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options
        .open(&key_path)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    out.write_all(
        format!("# A CURVE key pair (zmanager keys new): keep this file secret.\n{body}")
            .as_bytes(),
    )
    .map_err(|e| format!("{}: {e}", key_path.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    let mut out = options
        .open(&pub_path)
        .map_err(|e| format!("{}: {e}", pub_path.display()))?;
    out.write_all(format!("public_key = {:?}\n", file.public_key).as_bytes())
        .map_err(|e| format!("{}: {e}", pub_path.display()))?;
    Ok(public)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(services: &[(&str, &Key)]) -> SecurityConfig {
        SecurityConfig {
            key_file: PathBuf::from("node.key"),
            services: services
                .iter()
                .map(|(id, key)| ServiceKey {
                    id: (*id).to_owned(),
                    public_key: z85(key),
                    subscribe: Vec::new(),
                    push: Vec::new(),
                    answer: Vec::new(),
                    register: false,
                    operate: false,
                    http_token: None,
                })
                .collect(),
            workers: Vec::new(),
        }
    }

    #[test]
    fn a_key_names_one_service_and_a_service_has_one_entry() {
        let (a, _) = new_pair().unwrap();
        let (b, _) = new_pair().unwrap();
        assert!(config(&[("ada", &a), ("bob", &b)]).problems().is_empty());
        let problems = config(&[("ada", &a), ("bob", &a), ("ada", &b), ("bad id", &b)]).problems();
        let text = problems.join("\n");
        assert!(
            text.contains("\"bob\" has the public key of \"ada\""),
            "{text}"
        );
        assert!(text.contains("\"ada\" is listed twice"), "{text}");
        assert!(text.contains("id \"bad id\""), "{text}");
    }

    #[test]
    fn a_new_pair_is_written_once_and_read_back() {
        let dir = std::env::temp_dir().join(format!("zm-security-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let public = write_new_pair(&dir.join("node")).unwrap();
        let (read, secret) = read_key_file(&dir.join("node.key")).unwrap();
        assert_eq!(read, public);
        assert_ne!(secret, public);
        let shown = std::fs::read_to_string(dir.join("node.pub")).unwrap();
        assert_eq!(shown, format!("public_key = \"{}\"\n", z85(&public)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("node.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = write_new_pair(&dir.join("node")).unwrap_err();
        assert!(again.contains("node.key"), "{again}");
        let mut c = config(&[("ada", &public)]);
        c.key_file = dir.join("node.key");
        let keys = c.load().unwrap();
        assert_eq!((keys.public, keys.secret), (public, secret));
        assert_eq!(keys.services[&public], "ada");
        std::fs::write(
            dir.join("bad.key"),
            "public_key = \"x\"\nsecret_key = \"y\"\n",
        )
        .unwrap();
        let e = read_key_file(&dir.join("bad.key")).unwrap_err();
        assert!(e.contains("public_key: a key is 40 Z85 characters"), "{e}");
        // The server key a client is given: the text, or either file.
        for given in [
            z85(&public),
            dir.join("node.pub").display().to_string(),
            dir.join("node.key").display().to_string(),
        ] {
            assert_eq!(read_public_key(&given).unwrap(), public, "{given}");
        }
        let e = read_public_key(&dir.join("none.pub").display().to_string()).unwrap_err();
        assert!(
            e.contains("neither a key") && e.contains("nor a file"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_worker_key_is_its_own() {
        let (a, _) = new_pair().unwrap();
        let (w, _) = new_pair().unwrap();
        let mut c = config(&[("ada", &a)]);
        c.workers = vec![z85(&w)];
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        c.workers = vec![z85(&a), "short".into()];
        let text = c.problems().join("\n");
        assert!(
            text.contains("security.workers[0] is the public key of service \"ada\""),
            "{text}"
        );
        assert!(text.contains("security.workers[1]: a key is 40"), "{text}");
    }

    #[test]
    fn a_service_reads_its_own_results_and_what_it_is_granted() {
        let mut c = config(&[("ada", &[1; 32]), ("bob", &[2; 32])]);
        c.services[1].subscribe = vec!["Announce~".into()];
        let readers = Permissions::of(&c);
        assert!(readers.may_read(Some("ada"), b"@reply~ada~"));
        assert!(readers.may_read(Some("ada"), b"@reply~ada~x"));
        for prefix in [
            &b"@reply~bob~"[..],
            b"@reply~",
            b"@reply~ad",
            b"",
            b"Announce~",
        ] {
            assert!(!readers.may_read(Some("ada"), prefix), "{prefix:?}");
        }
        assert!(readers.may_read(Some("bob"), b"Announce~PUBLISH~x"));
        assert!(!readers.may_read(Some("bob"), b"Ann"), "wider than granted");
        assert!(!readers.may_read(None, b"@reply~ada~"));
        assert!(!readers.may_read(Some("eve"), b"@reply~ada~"));
        assert!(Permissions::open().may_read(None, b""));
    }

    #[test]
    fn a_service_may_do_what_it_is_granted_and_nothing_else() {
        let mut c = config(&[("ada", &[1; 32]), ("ops", &[2; 32])]);
        c.services[0].push = vec!["Greeting".into()];
        c.services[0].answer = vec!["Ask".into(), "?Other@ASYNC?reply".into()];
        c.services[1].push = vec!["*".into()];
        c.services[1].register = true;
        c.services[1].operate = true;
        let p = Permissions::of(&c);
        assert!(p.may_push("ada", "Greeting") && !p.may_push("ada", "Echo"));
        assert!(p.may_push("ops", "Echo") && !p.may_push("eve", "Greeting"));
        assert!(p.may_answer("ada", "Ask", "?Ask@ASYNC?x"));
        assert!(p.may_answer("ada", "Other", "?Other@ASYNC?reply"));
        assert!(!p.may_answer("ada", "Other", "?Other@ASYNC?else"));
        assert!(!p.may_answer("ops", "Ask", "?Ask@ASYNC?x"));
        assert!(p.may_register("ops") && !p.may_register("ada"));
        assert!(p.may_operate("ops") && !p.may_operate("ada") && !p.may_operate("eve"));
        let open = Permissions::open();
        assert!(
            open.may_push("x", "F") && open.may_answer("x", "F", "k") && open.may_register("x")
        );
        assert!(open.may_operate("x"));
    }
}
