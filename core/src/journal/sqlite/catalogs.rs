//! The catalog's versions in the journal (`docs/reload.md`): each version
//! a node ran, with its files, so that a request recovered after a crash
//! runs on the version it was accepted under, even after a reload or with
//! other files on disk. A version is recorded before any request runs on
//! it; versions are few (one per start with other files, one per reload)
//! and small, and are kept.

use rusqlite::params;

use super::{SqliteJournal, int, unsigned};
use crate::catalog::version::Sources;
use crate::journal::{CatalogLog, JournalError, RecordedCatalog};

impl CatalogLog for SqliteJournal {
    fn record_catalog(
        &self,
        version: u32,
        sources: &Sources,
        at_us: u64,
    ) -> Result<(), JournalError> {
        let blob = rmp_serde::to_vec_named(sources)
            .map_err(|e| self.sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        self.conn
            .execute(
                "INSERT INTO journal_catalogs (version, digest, sources, at_us) VALUES (?1, ?2, ?3, ?4)",
                params![version, sources.digest(), blob, int(at_us)],
            )
            .map_err(|e| self.sqlite(e))?;
        Ok(())
    }

    fn catalogs(&self) -> Result<Vec<RecordedCatalog>, JournalError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT version, digest, sources, at_us FROM journal_catalogs ORDER BY version",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map([], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(|e| self.sqlite(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (version, digest, blob, at_us) = row.map_err(|e| self.sqlite(e))?;
            let sources: Sources =
                rmp_serde::from_slice(&blob).map_err(|e| JournalError::Corrupt {
                    path: self.path().to_owned(),
                    detail: format!("catalog version {version} does not decode: {e}"),
                })?;
            out.push(RecordedCatalog {
                version,
                digest,
                sources,
                at_us: unsigned(at_us),
            });
        }
        Ok(out)
    }
}
