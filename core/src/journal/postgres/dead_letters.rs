//! The dead-letter store in the journal's PostgreSQL database: what
//! `dead_letter/sqlite.rs` keeps beside the SQLite journal, in the same
//! columns, so that a standby taking the journal over has the dead letters
//! too, and `zmanager dlq` reads them from any machine.
//!
//! The node's store writes as the journal does: its insert carries the
//! node's generation and locks the lease's row in the same statement, so a
//! node another took over from stores no dead letter (whose number the new
//! active may have given already). Tools (`zmanager dlq`, the HTTP server)
//! only read and record replays.

use bytes::Bytes;
use postgres::types::ToSql;

use super::PostgresJournal;
use crate::dead_letter::{DeadLetter, DeadLetterLog, Replay, StoreError, Summary, encode_errors};
use crate::journal::row::int;
use crate::wire::Message;

/// One dead letter, stored only while generation `$9` holds the lease;
/// `dead_letter_numbers` raised to its number. Returns a row when stored.
const INSERT: &str = "WITH owner AS (
         SELECT 1 FROM journal_owner WHERE generation = $9::bigint FOR SHARE),
     stored AS (
         INSERT INTO dead_letters (seq, at_us, service, id, flow, errors, envelope, payload)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE EXISTS (SELECT 1 FROM owner)
         RETURNING seq)
     INSERT INTO dead_letter_numbers (id, highest) SELECT true, seq FROM stored
     ON CONFLICT (id) DO UPDATE
         SET highest = GREATEST(dead_letter_numbers.highest, EXCLUDED.highest)
     RETURNING highest";

const COLUMNS: &str = "seq, at_us, errors, envelope, payload, replayed_us";

impl PostgresJournal {
    fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, StoreError> {
        Ok(self
            .connection()?
            .client
            .query(sql, params)
            .map_err(|e| self.error(e))?)
    }

    fn letters(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.query(sql, params)?
            .iter()
            .map(|r| {
                DeadLetter::of(
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    Bytes::from(r.get::<_, Vec<u8>>(4)),
                    r.get(5),
                )
            })
            .collect()
    }
}

impl DeadLetterLog for PostgresJournal {
    fn next_seq(&self) -> Result<u64, StoreError> {
        let rows = self.query(
            "SELECT GREATEST(
                 (SELECT MAX(highest) FROM dead_letter_numbers),
                 (SELECT MAX(seq) FROM dead_letters))",
            &[],
        )?;
        let highest: Option<i64> = rows.first().and_then(|r| r.get(0));
        Ok(u64::try_from(highest.unwrap_or(0)).unwrap_or(0) + 1)
    }

    fn insert_numbered(
        &self,
        seq: u64,
        message: &Message,
        errors: &[String],
        at_us: u64,
    ) -> Result<(), StoreError> {
        let e = &message.envelope;
        // A connection that is not the node's holds no generation: none
        // matches, and it stores nothing.
        let generation = self.generation.unwrap_or(0);
        let stored = self.query(
            INSERT,
            &[
                &int(seq),
                &int(at_us),
                &e.service,
                &e.id,
                &e.flow,
                &encode_errors(errors),
                &e.encode(),
                &message.payload.as_ref(),
                &generation,
            ],
        )?;
        if stored.is_empty() {
            self.fenced.store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::error!(target_db = %self.target, generation, "dead letters: another node holds the lease now; this node stores nothing more");
            return Err(self.fenced().into());
        }
        Ok(())
    }

    fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let mut letters = self.letters(
            &format!("SELECT {COLUMNS} FROM dead_letters ORDER BY seq DESC LIMIT $1"),
            &[&int(u64::try_from(limit).unwrap_or(u64::MAX))],
        )?;
        letters.reverse();
        Ok(letters)
    }

    fn page(&self, before: Option<i64>, limit: usize) -> Result<Vec<Summary>, StoreError> {
        self.query(
            "SELECT seq, at_us, errors, envelope, replayed_us FROM dead_letters
             WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
            &[
                &before.unwrap_or(i64::MAX),
                &int(u64::try_from(limit).unwrap_or(u64::MAX)),
            ],
        )?
        .iter()
        .map(|r| Summary::of(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
    }

    fn get(&self, seq: i64) -> Result<Option<DeadLetter>, StoreError> {
        Ok(self
            .letters(
                &format!("SELECT {COLUMNS} FROM dead_letters WHERE seq = $1"),
                &[&seq],
            )?
            .pop())
    }

    fn mark_replayed(&self, seq: i64, at_us: u64) -> Result<(), StoreError> {
        self.query(
            "UPDATE dead_letters SET replayed_us = $2 WHERE seq = $1",
            &[&seq, &int(at_us)],
        )?;
        Ok(())
    }

    fn find(&self, service: &str, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        Ok(self
            .letters(
                &format!(
                    "SELECT {COLUMNS} FROM dead_letters
                     WHERE service = $1 AND id = $2 ORDER BY seq DESC LIMIT 1"
                ),
                &[&service, &id],
            )?
            .pop())
    }

    fn record_replay(&self, seq: i64, replay: &Replay) -> Result<(), StoreError> {
        self.query(
            "INSERT INTO dead_letter_replays (seq, at_us, outcome, dead_letter)
             VALUES ($1, $2, $3, $4)",
            &[
                &seq,
                &int(replay.at_us),
                &replay.outcome,
                &replay.dead_letter,
            ],
        )?;
        Ok(())
    }

    fn replays(&self, seq: i64) -> Result<Vec<Replay>, StoreError> {
        Ok(self
            .query(
                "SELECT at_us, outcome, dead_letter FROM dead_letter_replays
                 WHERE seq = $1 ORDER BY replay",
                &[&seq],
            )?
            .iter()
            .map(|r| Replay {
                at_us: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
                outcome: r.get(1),
                dead_letter: r.get(2),
            })
            .collect())
    }

    fn superseded_by(&self, seq: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .query(
                "SELECT dead_letter FROM dead_letter_replays
                 WHERE seq = $1 AND dead_letter IS NOT NULL ORDER BY replay DESC LIMIT 1",
                &[&seq],
            )?
            .first()
            .map(|r| r.get(0)))
    }

    fn count(&self) -> Result<u64, StoreError> {
        let rows = self.query("SELECT COUNT(*) FROM dead_letters", &[])?;
        Ok(rows
            .first()
            .map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
    }
}

#[cfg(test)]
impl PostgresJournal {
    /// Removes every dead letter (not their numbers), as an operator might
    /// by hand.
    pub(crate) fn delete_dead_letters(&self) {
        self.query("DELETE FROM dead_letters", &[]).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dead_letter::DeadLetterStore;
    use crate::journal::postgres::Lease;
    use crate::journal::{JournalError, Location, SyncMode};
    use crate::wire::envelope::Envelope;

    fn letter(id: &str) -> Message {
        Message::new(Envelope::request(id, "F"), Bytes::from_static(b"\xc0"))
    }

    fn owner(url: &str, standby: bool) -> PostgresJournal {
        let lease = Lease {
            duration: Duration::from_millis(300),
            standby,
        };
        PostgresJournal::open_owner(url, SyncMode::Full, &lease, &|| false).unwrap()
    }

    /// A node another took over from stores no dead letter, for good: its
    /// number may be the new active's already.
    #[test]
    fn a_node_another_took_over_from_stores_no_dead_letter() {
        let Some(server) = zmanager_test_postgres::shared("the dead letters' fencing") else {
            return;
        };
        let url = server.database();
        let mut old = owner(&url, false);
        let old_letters = DeadLetterStore::beside(&old.holding().unwrap()).unwrap();
        old_letters
            .insert_numbered(1, &letter("old-1"), &[], 1)
            .unwrap();
        // It stops renewing (frozen, or cut off) but keeps its sessions.
        old.renewer = None;
        let new = owner(&url, true);
        let new_letters = DeadLetterStore::beside(&new.holding().unwrap()).unwrap();
        assert_eq!(
            new_letters.next_seq().unwrap(),
            2,
            "the old active's letter is there"
        );
        new_letters
            .insert_numbered(2, &letter("new-2"), &[], 2)
            .unwrap();
        let e = old_letters
            .insert_numbered(3, &letter("old-3"), &[], 3)
            .unwrap_err();
        assert!(
            matches!(e, StoreError::Postgres(JournalError::Fenced { .. })),
            "{e:?}"
        );
        // Its journal connection knows too: the node stops.
        assert!(
            old.taken_over()
                .unwrap()
                .load(std::sync::atomic::Ordering::SeqCst)
        );
        let ids: Vec<String> = new_letters
            .list(10)
            .unwrap()
            .into_iter()
            .map(|d| d.message.envelope.id)
            .collect();
        assert_eq!(ids, ["old-1", "new-2"]);
        // A tool's connection holds no generation and stores none.
        let tool = DeadLetterStore::open(&Location::Postgres(url.clone())).unwrap();
        assert!(tool.insert_numbered(4, &letter("tool-4"), &[], 4).is_err());
        // Dropping the store does not give up the lease it never held.
        drop(new_letters);
        assert!(new.holding().is_some());
        let e = PostgresJournal::open_owner(
            &url,
            SyncMode::Full,
            &Lease {
                duration: Duration::from_millis(300),
                standby: false,
            },
            &|| true,
        )
        .unwrap_err();
        assert!(matches!(e, JournalError::Held { .. }), "still held: {e:?}");
    }

    #[test]
    fn a_database_with_no_dead_letters_is_a_clear_error() {
        let Some(server) = zmanager_test_postgres::shared("the dead letters' missing schema")
        else {
            return;
        };
        let empty = Location::Postgres(server.database());
        let e = DeadLetterStore::open(&empty).unwrap_err().to_string();
        assert!(e.contains("holds no journal"), "{e}");

        // A journal migrated by a zmanager from before dead letters were
        // kept in PostgreSQL.
        let url = server.database();
        drop(PostgresJournal::open(&url, SyncMode::Full).unwrap());
        let mut raw = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        raw.execute("DELETE FROM zmanager_schema WHERE version >= 3", &[])
            .unwrap();
        let e = DeadLetterStore::open(&Location::Postgres(url))
            .unwrap_err()
            .to_string();
        assert!(e.contains("schema is version 2"), "{e}");
        assert!(
            e.contains("start a node of this zmanager on it once"),
            "{e}"
        );
    }
}
