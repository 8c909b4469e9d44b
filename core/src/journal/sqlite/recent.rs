//! [`Journal::recent`](crate::journal::Journal::recent) on SQLite: a page
//! of requests, newest first, read from the cursor down an index (the
//! rowid for acceptances, `journal_failures` for failures), then each
//! listed request's own events by `journal_events_message`. A test checks
//! the query plans, so a change that would scan the table fails it.

use rusqlite::{OptionalExtension, params};

use super::{SqliteJournal, unsigned};
use crate::journal::{EventKind, JournalError, MessageState, RecentPage, RecentRequest};

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
            let latest = latest.unwrap_or_default();
            let mut parts = latest.split('\u{1f}');
            let kind = parts.next().and_then(EventKind::parse);
            let at_us = parts.next().and_then(|t| t.parse::<i64>().ok());
            let reason = parts.next().filter(|r| !r.is_empty()).map(str::to_owned);
            let Some(state) = kind.and_then(MessageState::after) else {
                continue; // only dispatches left: retention kept no more
            };
            let ended = matches!(state, MessageState::Completed | MessageState::DeadLettered);
            out.push(RecentRequest {
                seq,
                service,
                id,
                flow: flow.unwrap_or_default(),
                accepted_us: accepted_at.map(unsigned),
                ended_us: if ended { at_us.map(unsigned) } else { None },
                state,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                error: if ended { reason } else { None },
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::journal::testing::{TempDir, request};
    use crate::journal::{Event, Journal, MessageState, RecentPage, SqliteJournal, SyncMode};
    use crate::wire::Message;
    use crate::wire::error_code::ErrorCode;

    fn key(service: &str, id: &str) -> (String, String) {
        (service.to_owned(), id.to_owned())
    }

    fn accepted(at_us: u64, service: &str, id: &str) -> Event {
        Event::Accepted {
            at_us,
            message: request(service, id, "F"),
        }
    }

    fn completed(at_us: u64, service: &str, id: &str, error: Option<ErrorCode>) -> Event {
        let mut result: Message = request(service, id, "F");
        if let Some(code) = error {
            result.envelope = result.envelope.into_error(code, "it failed".to_owned());
        }
        Event::Completed {
            at_us,
            key: key(service, id),
            result: Some(result),
        }
    }

    fn page(before: Option<i64>, limit: u32, failed: bool) -> RecentPage {
        RecentPage {
            before,
            limit,
            failed,
        }
    }

    #[test]
    fn pages_go_back_from_the_newest_and_failures_have_their_own_list() {
        let dir = TempDir::new("recent-pages");
        let j = SqliteJournal::open(dir.path(), SyncMode::Normal).unwrap();
        let mut events = Vec::new();
        for n in 0..10u64 {
            let id = n.to_string();
            events.push(accepted(100 + n, "s", &id));
            events.push(Event::Dispatched {
                at_us: 200 + n,
                key: key("s", &id),
                attempt: 1,
                worker: Bytes::from_static(b"w"),
            });
            match n {
                3 => events.push(completed(300 + n, "s", &id, Some(ErrorCode::ActionFailed))),
                5 => events.push(Event::DeadLettered {
                    at_us: 300 + n,
                    key: key("s", &id),
                    reason: "dead letter #1: boom".into(),
                }),
                9 => {} // still running
                _ => events.push(completed(300 + n, "s", &id, None)),
            }
        }
        j.append(&events).unwrap();

        let first = j.recent(&page(None, 4, false)).unwrap();
        let ids: Vec<&str> = first.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["9", "8", "7", "6"]);
        assert_eq!(first[0].state, MessageState::Accepted);
        assert_eq!((first[0].attempts, first[0].ended_us), (1, None));
        assert_eq!(first[1].state, MessageState::Completed);
        assert_eq!(first[1].ended_us, Some(308));
        assert_eq!(first[1].accepted_us, Some(108));
        assert_eq!(first[1].error, None);

        let second = j.recent(&page(Some(first[3].seq), 4, false)).unwrap();
        let ids: Vec<&str> = second.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["5", "4", "3", "2"]);
        assert_eq!(second[0].state, MessageState::DeadLettered);
        assert_eq!(second[0].error.as_deref(), Some("dead letter #1: boom"));
        assert_eq!(second[2].error.as_deref(), Some("action_failed"));

        let failed = j.recent(&page(None, 10, true)).unwrap();
        let ids: Vec<&str> = failed.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["5", "3"], "the dead letter, then the error result");
        assert_eq!(failed[0].flow, "F");
        let older = j.recent(&page(Some(failed[0].seq), 10, true)).unwrap();
        assert_eq!(older.len(), 1);
        assert_eq!(older[0].id, "3");
    }

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
