//! Versions of the catalog (`docs/reload.md`): a node runs new requests on
//! its newest catalog, and every request on the version it was accepted
//! under, for its whole life — through redeliveries, retries, ordering
//! waits, `@ASYNC` suspension and recovery after a crash. A reload adds a
//! version; a version nothing unfinished uses any more is let go.
//!
//! A version is its number (1, 2, … in the order the journal recorded
//! them), its [`Sources`] (the flow and mapping files as read) and their
//! digest, and the [`Catalog`] built from them. The digest names the
//! files' contents, not where they were read from: two nodes, or a node
//! and its worker, that read the same texts have the same digest.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::Catalog;
use super::diagnostic::Diagnostics;
use super::source::SourceFile;

/// The flow and mapping files a catalog is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sources {
    pub flows: Vec<SourceFile>,
    pub mappings: Vec<SourceFile>,
}

impl Sources {
    /// The SHA-256 of the files' names (without their directories),
    /// formats and texts, in order, as lowercase hex.
    pub fn digest(&self) -> String {
        let mut hash = Sha256::new();
        for (kind, files) in [("flows", &self.flows), ("mappings", &self.mappings)] {
            hash.update(kind.as_bytes());
            hash.update(files.len().to_le_bytes());
            for file in files {
                let name = file.name.rsplit('/').next().unwrap_or(&file.name);
                for part in [
                    name.as_bytes(),
                    file.format.as_str().as_bytes(),
                    file.text.as_bytes(),
                ] {
                    hash.update(part.len().to_le_bytes());
                    hash.update(part);
                }
            }
        }
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The catalog these files make, and what is wrong with them.
    pub fn build(&self) -> (Catalog, Diagnostics) {
        Catalog::build(&self.flows, &self.mappings)
    }
}

/// One version of the catalog.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub number: u32,
    pub digest: String,
    pub sources: Arc<Sources>,
    pub catalog: Arc<Catalog>,
}

/// The newest version, shared with what reads the catalog beside the
/// Subject (the HTTP server's flows and replays); a reload replaces it.
#[derive(Debug, Clone)]
pub struct Current(Arc<std::sync::RwLock<(u32, Arc<Catalog>)>>);

impl Current {
    pub fn new(number: u32, catalog: Arc<Catalog>) -> Self {
        Self(Arc::new(std::sync::RwLock::new((number, catalog))))
    }

    pub fn get(&self) -> Arc<Catalog> {
        Arc::clone(&self.read().1)
    }

    /// The newest version's number.
    pub fn number(&self) -> u32 {
        self.read().0
    }

    pub fn set(&self, number: u32, catalog: Arc<Catalog>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (number, catalog);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, (u32, Arc<Catalog>)> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The versions a node holds: the newest, and every older one an
/// unfinished request still uses.
#[derive(Debug, Clone)]
pub struct Catalogs {
    versions: BTreeMap<u32, Versioned>,
    newest: u32,
    /// Unfinished requests per version.
    users: HashMap<u32, usize>,
}

impl Catalogs {
    /// `first` alone, as the newest.
    pub fn new(first: Versioned) -> Self {
        let newest = first.number;
        Self {
            versions: BTreeMap::from([(newest, first)]),
            newest,
            users: HashMap::new(),
        }
    }

    /// A single catalog with no sources (tests, and tools that do not
    /// reload), as version 1 under `digest`.
    pub fn single(catalog: Arc<Catalog>, digest: &str) -> Self {
        Self::new(Versioned {
            number: 1,
            digest: digest.to_owned(),
            sources: Arc::default(),
            catalog,
        })
    }

    pub fn newest(&self) -> &Versioned {
        &self.versions[&self.newest]
    }

    /// Version `number`; `0` (a request accepted before versions existed)
    /// is the newest.
    pub fn get(&self, number: u32) -> Option<&Versioned> {
        if number == 0 {
            return Some(self.newest());
        }
        self.versions.get(&number)
    }

    /// Every version held, oldest first.
    pub fn all(&self) -> impl Iterator<Item = &Versioned> {
        self.versions.values()
    }

    /// Adds `version` (a higher number than any held) as the newest, or an
    /// older one a recovered request uses.
    pub fn insert(&mut self, version: Versioned) {
        let number = version.number;
        self.versions.insert(number, version);
        if number > self.newest {
            let before = self.newest;
            self.newest = number;
            self.let_go(before);
        }
    }

    /// A request on version `number` was accepted (or recovered).
    pub fn hold(&mut self, number: u32) {
        *self.users.entry(number).or_default() += 1;
    }

    /// A request on version `number` ended: the version is let go when it
    /// is not the newest and nothing else uses it.
    pub fn release(&mut self, number: u32) {
        if let Some(n) = self.users.get_mut(&number) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.users.remove(&number);
                self.let_go(number);
            }
        }
    }

    /// Unfinished requests on each version held.
    pub fn users(&self) -> BTreeMap<u32, usize> {
        self.versions
            .keys()
            .map(|v| (*v, self.users.get(v).copied().unwrap_or(0)))
            .collect()
    }

    fn let_go(&mut self, number: u32) {
        if number != self.newest && !self.users.contains_key(&number) {
            self.versions.remove(&number);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::source::Format;

    fn sources(text: &str) -> Sources {
        Sources {
            flows: vec![SourceFile::new("/a/flows/f.ini", text, Format::Ini)],
            mappings: vec![],
        }
    }

    fn version(number: u32) -> Versioned {
        Versioned {
            number,
            digest: format!("d{number}"),
            sources: Arc::default(),
            catalog: Arc::default(),
        }
    }

    #[test]
    fn the_digest_is_of_the_texts_not_where_they_were_read() {
        let a = sources("[F]\n?F?Push\n??done\n");
        let mut b = a.clone();
        b.flows[0].name = Arc::from("/elsewhere/f.ini");
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), sources("[F]\n?F?Push\n?F?x\n??done\n").digest());
        assert_eq!(a.digest().len(), 64);
    }

    #[test]
    fn an_old_version_lives_as_long_as_a_request_uses_it() {
        let mut c = Catalogs::new(version(1));
        c.hold(1);
        c.hold(1);
        c.insert(version(2));
        assert_eq!(c.newest().number, 2);
        assert!(c.get(1).is_some(), "two requests still use it");
        assert_eq!(c.get(0).map(|v| v.number), Some(2), "0 is the newest");
        c.release(1);
        assert!(c.get(1).is_some());
        c.release(1);
        assert!(c.get(1).is_none(), "let go with its last request");
        c.release(2);
        assert_eq!(c.newest().number, 2, "the newest stays");
        c.insert(version(3));
        assert!(c.get(2).is_none(), "nothing used 2: let go once 3 came");
        assert_eq!(c.users(), BTreeMap::from([(3, 0)]));
    }
}
