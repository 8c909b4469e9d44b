//! [`Journal::recent`](crate::journal::Journal::recent) on SQLite: a page
//! of requests, newest first, read from the cursor down an index (the
//! rowid for acceptances, `journal_failures` for failures), then each
//! listed request's own events by `journal_events_message`. A test checks
//! the query plans, so a change that would scan the table fails it.

use rusqlite::{OptionalExtension, params};

use super::SqliteJournal;
use crate::journal::row;
use crate::journal::{JournalError, RecentPage, RecentRequest};

/// The acceptances of a page (newest first).
pub(super) const ACCEPTED: &str = "SELECT seq, service, id FROM journal_events
     WHERE kind = 'accepted' AND seq < ?1 ORDER BY seq DESC LIMIT ?2";

/// The failures of a page (newest first); the condition is the partial
/// index's own, so SQLite reads that index.
pub(super) const FAILED: &str = "SELECT seq, service, id FROM journal_events
     WHERE (kind = 'dead_lettered' OR (kind = 'completed' AND reason IS NOT NULL))
       AND seq < ?1 ORDER BY seq DESC LIMIT ?2";

/// One message's life in brief, from its own events.
const LIFE: &str = "SELECT
        (SELECT flow FROM journal_events WHERE service = ?1 AND id = ?2 AND kind = 'accepted'
          ORDER BY seq DESC LIMIT 1),
        (SELECT at_us FROM journal_events WHERE service = ?1 AND id = ?2 AND kind = 'accepted'
          ORDER BY seq DESC LIMIT 1),
        (SELECT COALESCE(MAX(attempt), 0) FROM journal_events WHERE service = ?1 AND id = ?2),
        (SELECT kind || char(31) || at_us || char(31) || COALESCE(reason, '')
           FROM journal_events WHERE service = ?1 AND id = ?2 AND kind != 'dispatched'
          ORDER BY seq DESC LIMIT 1)";

impl SqliteJournal {
    pub(super) fn recent_page(
        &self,
        page: &RecentPage,
    ) -> Result<Vec<RecentRequest>, JournalError> {
        let sql = if page.failed { FAILED } else { ACCEPTED };
        let before = page.before.unwrap_or(i64::MAX);
        let mut listed = self.conn.prepare_cached(sql).map_err(|e| self.sqlite(e))?;
        let rows: Vec<(i64, String, String)> = listed
            .query_map(params![before, page.limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| self.sqlite(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sqlite(e))?;
        let mut life = self.conn.prepare_cached(LIFE).map_err(|e| self.sqlite(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for (seq, service, id) in rows {
            let found = life
                .query_row(params![service, id], |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                })
                .optional()
                .map_err(|e| self.sqlite(e))?;
            let Some((flow, accepted_at, attempts, latest)) = found else {
                continue;
            };
            out.extend(row::recent_request(
                (seq, service, id),
                flow,
                accepted_at,
                attempts,
                latest,
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::journal::testing::TempDir;
    use crate::journal::{SqliteJournal, SyncMode};

    /// `EXPLAIN QUERY PLAN` of `sql`: one line per step.
    fn plan(j: &SqliteJournal, sql: &str, params: impl rusqlite::Params) -> String {
        let mut statement = j
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let rows = statement
            .query_map(params, |r| r.get::<_, String>(3))
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn a_page_reads_indexes_not_the_whole_table() {
        let dir = TempDir::new("recent-plans");
        let j = SqliteJournal::open(dir.path(), SyncMode::Normal).unwrap();
        let accepted = plan(&j, super::ACCEPTED, rusqlite::params![i64::MAX, 50]);
        assert!(
            accepted.contains("USING INTEGER PRIMARY KEY (rowid<?)"),
            "acceptances from the cursor down the rowid: {accepted}"
        );
        let failed = plan(&j, super::FAILED, rusqlite::params![i64::MAX, 50]);
        assert!(
            failed.contains("journal_failures"),
            "failures from their partial index: {failed}"
        );
        let life = plan(&j, super::LIFE, rusqlite::params!["s", "1"]);
        for line in life.lines().filter(|l| l.contains("journal_events")) {
            assert!(
                line.contains("journal_events_message"),
                "a request's own events by its index: {life}"
            );
        }
    }
}
