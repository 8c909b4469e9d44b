//! The catalog's versions in the PostgreSQL journal: what
//! `journal/sqlite/catalogs.rs` keeps in SQLite, in the same form (the
//! files as named MessagePack), read back the same way.

use super::PostgresJournal;
use crate::catalog::version::Sources;
use crate::journal::row::{int, unsigned};
use crate::journal::{CatalogLog, JournalError, RecordedCatalog};

impl CatalogLog for PostgresJournal {
    fn record_catalog(
        &self,
        version: u32,
        sources: &Sources,
        at_us: u64,
    ) -> Result<(), JournalError> {
        let blob = rmp_serde::to_vec_named(sources).map_err(|e| JournalError::Config {
            detail: format!("catalog version {version} cannot be encoded: {e}"),
        })?;
        // A connection of the node's records nothing once another
        // generation holds the lease: that node numbers the versions now.
        let recorded = self
            .connection()?
            .client
            .execute(
                "WITH owner AS (
                     SELECT 1 FROM journal_owner WHERE generation = $5::bigint FOR SHARE)
                 INSERT INTO journal_catalogs (version, digest, sources, at_us)
                 SELECT $1, $2, $3, $4
                 WHERE $5::bigint IS NULL OR EXISTS (SELECT 1 FROM owner)",
                &[
                    &i64::from(version),
                    &sources.digest(),
                    &blob,
                    &int(at_us),
                    &self.generation,
                ],
            )
            .map_err(|e| self.error(e))?;
        if recorded == 0 {
            self.fenced.store(true, std::sync::atomic::Ordering::SeqCst);
            return Err(self.fenced());
        }
        Ok(())
    }

    fn catalogs(&self) -> Result<Vec<RecordedCatalog>, JournalError> {
        let rows = self
            .connection()?
            .client
            .query(
                "SELECT version, digest, sources, at_us FROM journal_catalogs ORDER BY version",
                &[],
            )
            .map_err(|e| self.error(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let version = u32::try_from(r.get::<_, i64>(0)).unwrap_or(u32::MAX);
            let blob: Vec<u8> = r.get(2);
            let sources: Sources =
                rmp_serde::from_slice(&blob).map_err(|e| JournalError::Corrupt {
                    path: self.target.clone(),
                    detail: format!("catalog version {version} does not decode: {e}"),
                })?;
            out.push(RecordedCatalog {
                version,
                digest: r.get(1),
                sources,
                at_us: unsigned(r.get(3)),
            });
        }
        Ok(out)
    }
}
