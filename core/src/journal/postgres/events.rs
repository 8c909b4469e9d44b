//! [`Journal`] on PostgreSQL. The queries are SQLite's, in PostgreSQL's
//! dialect, with the per-message lookups SQLite makes one by one (cheap in
//! process, a round trip each over a network) folded into one query with
//! `LATERAL` joins.

use postgres::types::ToSql;

use super::PostgresJournal;
use crate::journal::batch;
use crate::journal::row::{
    self, COLUMNS, COLUMNS_UNMERGED, Latest, Stored, TERMINAL, int, unsigned,
};
use crate::journal::{
    Event, EventKind, Journal, JournalError, JournalStats, MessageState, MessageSummary,
    RecentPage, RecentRequest, RecordedEvent, SummaryFilter, Unfinished,
};
use crate::wire::Message;

/// A batch, in one statement: one array per column, unnested in order.
/// `seq` is assigned as the rows are inserted, in the arrays' order. Only
/// while generation `$13` holds the lease, whose row it locks for the
/// statement (`lease`: fencing); otherwise it inserts nothing.
const INSERT: &str = "WITH owner AS (
         SELECT 1 FROM journal_owner WHERE generation = $13::bigint FOR SHARE)
     INSERT INTO journal_events
     (at_us, kind, service, id, flow, attempt, worker, step, reason, envelope, payload,
      dispatched_us)
     SELECT at_us, kind, service, id, flow, attempt, worker, step, reason, envelope, payload,
            dispatched_us
     FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                 $7::bytea[], $8::bigint[], $9::text[], $10::bytea[], $11::bytea[],
                 $12::bigint[])
          WITH ORDINALITY
          AS u(at_us, kind, service, id, flow, attempt, worker, step, reason, envelope, payload,
               dispatched_us, n)
     WHERE EXISTS (SELECT 1 FROM owner)
     ORDER BY n";

/// The latest acceptance of each message with nothing final after it,
/// with the attempt of a dispatch written into its row, and its latest
/// suspension, resumption and dispatch after it.
const UNFINISHED: &str = "SELECT a.seq, a.envelope, a.payload, a.attempt,
        s.seq, s.attempt, s.envelope, s.payload,
        r.seq, r.attempt, r.envelope, r.payload,
        d.seq, d.attempt, d.envelope, d.payload
     FROM journal_events a
     LEFT JOIN LATERAL (SELECT seq, attempt, envelope, payload FROM journal_events x
         WHERE x.service = a.service AND x.id = a.id AND x.seq > a.seq AND x.kind = 'suspended'
         ORDER BY seq DESC LIMIT 1) s ON true
     LEFT JOIN LATERAL (SELECT seq, attempt, envelope, payload FROM journal_events x
         WHERE x.service = a.service AND x.id = a.id AND x.seq > a.seq AND x.kind = 'resumed'
         ORDER BY seq DESC LIMIT 1) r ON true
     LEFT JOIN LATERAL (SELECT seq, attempt, NULL::bytea AS envelope, NULL::bytea AS payload
         FROM journal_events x
         WHERE x.service = a.service AND x.id = a.id AND x.seq > a.seq AND x.kind = 'dispatched'
         ORDER BY seq DESC LIMIT 1) d ON true
     WHERE a.kind = 'accepted' AND NOT EXISTS (
         SELECT 1 FROM journal_events t
         WHERE t.service = a.service AND t.id = a.id AND t.seq > a.seq
           AND (t.kind = 'accepted' OR t.kind IN ('completed', 'dead_lettered')))
     ORDER BY a.seq";

/// A page of the console's list, each request with its life in brief, in
/// one query. `{listed}` selects the requests listed (from the cursor `$1`
/// down, at most `$2`): acceptances, or failures by their partial index's
/// own condition, so that the planner reads that index.
const RECENT: &str = "SELECT p.seq, p.service, p.id,
        (SELECT flow FROM journal_events WHERE service = p.service AND id = p.id
           AND kind = 'accepted' ORDER BY seq DESC LIMIT 1),
        (SELECT at_us FROM journal_events WHERE service = p.service AND id = p.id
           AND kind = 'accepted' ORDER BY seq DESC LIMIT 1),
        (SELECT COALESCE(MAX(attempt), 0) FROM journal_events
           WHERE service = p.service AND id = p.id),
        (SELECT kind || chr(31) || at_us || chr(31) || COALESCE(reason, '')
           FROM journal_events WHERE service = p.service AND id = p.id
           AND kind <> 'dispatched' ORDER BY seq DESC LIMIT 1)
     FROM (SELECT seq, service, id FROM journal_events
           WHERE ({listed}) AND seq < $1 ORDER BY seq DESC LIMIT $2) p
     ORDER BY p.seq DESC";

/// The acceptances of a page.
const ACCEPTED: &str = "kind = 'accepted'";

/// The failures of a page: the condition of the `journal_failures` index.
const FAILED: &str = "kind = 'dead_lettered' OR (kind = 'completed' AND reason IS NOT NULL)";

fn latest(row: &postgres::Row, at: usize) -> Option<Latest> {
    Some(Latest {
        seq: row.get::<_, Option<i64>>(at)?,
        attempt: row.get(at + 1),
        envelope: row.get(at + 2),
        payload: row.get(at + 3),
    })
}

impl PostgresJournal {
    /// The columns of a whole row as this database has them.
    fn columns(&self) -> &'static str {
        if self.unmerged {
            COLUMNS_UNMERGED
        } else {
            COLUMNS
        }
    }

    /// Inserts `events` with one statement (its own transaction), as the
    /// rows `batch` makes of them.
    fn insert<'a>(&self, events: impl Iterator<Item = &'a Event>) -> Result<(), JournalError> {
        let rows = batch::rows(events);
        if rows.is_empty() {
            return Ok(());
        }
        let at_us: Vec<i64> = rows.iter().map(|r| r.at_us).collect();
        let kind: Vec<&str> = rows.iter().map(|r| r.kind).collect();
        let service: Vec<&str> = rows.iter().map(|r| r.service).collect();
        let id: Vec<&str> = rows.iter().map(|r| r.id).collect();
        let columns: Vec<_> = rows.iter().map(|r| &r.columns).collect();
        let flow: Vec<&str> = columns.iter().map(|c| c.flow).collect();
        let attempt: Vec<Option<i64>> = columns.iter().map(|c| c.attempt).collect();
        let worker: Vec<Option<&[u8]>> = columns.iter().map(|c| c.worker).collect();
        let step: Vec<Option<i64>> = columns.iter().map(|c| c.step).collect();
        let reason: Vec<Option<&str>> = columns.iter().map(|c| c.reason).collect();
        let envelope: Vec<Option<&[u8]>> = columns.iter().map(|c| c.envelope.as_deref()).collect();
        let payload: Vec<Option<&[u8]>> = columns.iter().map(|c| c.payload).collect();
        let dispatched_us: Vec<Option<i64>> = columns.iter().map(|c| c.dispatched_us).collect();
        // A connection that is not the node's holds no generation: none
        // matches, and it writes nothing.
        let generation = self.generation.unwrap_or(0);
        let params: [&(dyn ToSql + Sync); 13] = [
            &at_us,
            &kind,
            &service,
            &id,
            &flow,
            &attempt,
            &worker,
            &step,
            &reason,
            &envelope,
            &payload,
            &dispatched_us,
            &generation,
        ];
        let mut connection = self.connection()?;
        let connection = &mut *connection;
        let statement = match &connection.insert {
            Some(statement) => statement.clone(),
            None => {
                let statement = connection
                    .client
                    .prepare(INSERT)
                    .map_err(|e| self.error(e))?;
                connection.insert = Some(statement.clone());
                statement
            }
        };
        let inserted = connection
            .client
            .execute(&statement, &params)
            .map_err(|e| self.error(e))?;
        if inserted == 0 {
            self.fenced.store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::error!(target_db = %self.target, generation, "journal: another node holds the lease now; this node commits nothing more");
            return Err(self.fenced());
        }
        Ok(())
    }

    /// The rows `sql` selects.
    fn rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, JournalError> {
        self.connection()?
            .client
            .query(sql, params)
            .map_err(|e| self.error(e))
    }

    /// Messages stored by `sql` (selecting `seq, envelope, payload`).
    fn messages(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<(i64, Message)>, JournalError> {
        Ok(self
            .rows(sql, params)?
            .into_iter()
            .filter_map(|r| {
                let seq: i64 = r.get(0);
                row::message(&self.target, seq, r.get(1), r.get(2)).map(|m| (seq, m))
            })
            .collect())
    }
}

impl Journal for PostgresJournal {
    fn append(&self, events: &[Event]) -> Result<(), JournalError> {
        self.insert(events.iter())
    }

    fn append_batches(&self, batches: &[Vec<Event>]) -> Result<(), JournalError> {
        self.insert(batches.iter().flatten())
    }

    fn unfinished(&self) -> Result<Vec<Unfinished>, JournalError> {
        let rows = self.rows(UNFINISHED, &[])?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let seq: i64 = r.get(0);
            let Some(accepted) = row::message(&self.target, seq, r.get(1), r.get(2)) else {
                continue;
            };
            out.push(row::unfinished(
                &self.target,
                (seq, r.get(3)),
                accepted,
                latest(&r, 4),
                latest(&r, 8),
                latest(&r, 12),
            ));
        }
        Ok(out)
    }

    fn recent_results(
        &self,
        since_us: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Message)>, JournalError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.rows(
            "SELECT seq, at_us, envelope, payload FROM journal_events
             WHERE kind = 'completed' AND envelope IS NOT NULL AND at_us >= $1
             ORDER BY seq DESC LIMIT $2",
            &[&int(since_us), &limit],
        )?;
        let mut out: Vec<(u64, Message)> = rows
            .into_iter()
            .filter_map(|r| {
                let at_us: i64 = r.get(1);
                row::message(&self.target, r.get(0), r.get(2), r.get(3))
                    .map(|m| (unsigned(at_us), m))
            })
            .collect();
        out.reverse();
        Ok(out)
    }

    fn history(&self, service: &str, id: &str) -> Result<Vec<RecordedEvent>, JournalError> {
        let rows = self.rows(
            &format!(
                "SELECT {} FROM journal_events WHERE service = $1 AND id = $2 ORDER BY seq",
                self.columns()
            ),
            &[&service, &id],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            row::events(
                &self.target,
                Stored {
                    seq: r.get(0),
                    at_us: r.get(1),
                    kind: r.get(2),
                    service: r.get(3),
                    id: r.get(4),
                    attempt: r.get(5),
                    worker: r.get(6),
                    step: r.get(7),
                    reason: r.get(8),
                    envelope: r.get(9),
                    payload: r.get(10),
                    dispatched_us: r.get(11),
                },
                &mut out,
            );
        }
        Ok(out)
    }

    fn range(
        &self,
        since_us: u64,
        until_us: u64,
        flow: Option<&str>,
    ) -> Result<Vec<Message>, JournalError> {
        let found = self.messages(
            "SELECT seq, envelope, payload FROM journal_events
             WHERE kind = 'accepted' AND at_us >= $1 AND at_us < $2
               AND ($3::text IS NULL OR flow = $3)
             ORDER BY seq",
            &[&int(since_us), &int(until_us), &flow],
        )?;
        Ok(found.into_iter().map(|(_, m)| m).collect())
    }

    fn stats(&self) -> Result<JournalStats, JournalError> {
        let mut stats = JournalStats::default();
        // An acceptance's row with an attempt holds its dispatch too.
        for r in self.rows(
            "SELECT kind, COUNT(*), COUNT(attempt) FROM journal_events GROUP BY kind",
            &[],
        )? {
            let kind: String = r.get(0);
            let n = unsigned(r.get(1));
            if !row::count_kind(&mut stats, &kind, n) {
                tracing::warn!(target_db = %self.target, kind = %kind, n, "journal rows of unknown kind");
            }
            if kind == EventKind::Accepted.as_str() {
                stats.dispatched += unsigned(r.get(2));
            }
        }
        let ends = self.rows(
            // Events are appended in time order: the first and the last row.
            "SELECT (SELECT at_us FROM journal_events ORDER BY seq LIMIT 1),
                    (SELECT at_us FROM journal_events ORDER BY seq DESC LIMIT 1)",
            &[],
        )?;
        if let Some(r) = ends.first() {
            stats.oldest_us = r.get::<_, Option<i64>>(0).map(unsigned);
            stats.newest_us = r.get::<_, Option<i64>>(1).map(unsigned);
        }
        Ok(stats)
    }

    fn compact(&self, finished_before_us: u64) -> Result<u64, JournalError> {
        self.compact_oldest(finished_before_us, u64::MAX)
    }

    fn compact_oldest(
        &self,
        finished_before_us: u64,
        max_messages: u64,
    ) -> Result<u64, JournalError> {
        // One statement: the final events, oldest first (through the time
        // index), and every event of their messages up to them. A message
        // finishing meanwhile is not in the statement's snapshot, so it is
        // left whole for the next pass. A connection of the node's removes
        // nothing once another generation holds the lease.
        let rows = self.rows(
            &format!(
                "WITH owner AS (
                     SELECT 1 FROM journal_owner WHERE generation = $3::bigint FOR SHARE),
                 f AS (
                     SELECT service, id, seq FROM journal_events
                     WHERE kind IN {TERMINAL} AND at_us < $1
                       AND ($3::bigint IS NULL OR EXISTS (SELECT 1 FROM owner))
                     ORDER BY at_us, seq LIMIT $2),
                 d AS (
                     DELETE FROM journal_events e USING f
                     WHERE e.service = f.service AND e.id = f.id AND e.seq <= f.seq
                     RETURNING 1)
                 SELECT (SELECT COUNT(*) FROM (SELECT DISTINCT service, id FROM f) m),
                        (SELECT COUNT(*) FROM d)"
            ),
            &[
                &int(finished_before_us),
                &int(max_messages),
                &self.generation,
            ],
        )?;
        Ok(rows.first().map_or(0, |r| unsigned(r.get(0))))
    }

    /// The bytes the journal's live rows take (`pg_column_size` of each,
    /// TOASTed payloads as stored). PostgreSQL keeps the space of deleted
    /// rows in its files for reuse, so the files' size would not go down
    /// after a compaction: this counts the rows instead, which reads the
    /// whole table: `max_mb` costs that once per retention pass over it,
    /// `retain` does not.
    fn data_bytes(&self) -> Result<u64, JournalError> {
        let rows = self.rows(
            "SELECT (SELECT COALESCE(SUM(pg_column_size(e.*)), 0) FROM journal_events e)::bigint
                  + (SELECT COALESCE(SUM(pg_column_size(c.*)), 0) FROM journal_catalogs c)::bigint",
            &[],
        )?;
        Ok(rows.first().map_or(0, |r| unsigned(r.get(0))))
    }

    fn summaries(&self, filter: &SummaryFilter) -> Result<Vec<MessageSummary>, JournalError> {
        let lifecycle = row::quoted_states(|_| true);
        let selected = row::quoted_states(|s| filter.state.matches(s));
        let sql = format!(
            "WITH m AS (
                 SELECT service, id,
                        MAX(CASE WHEN kind = 'accepted' THEN seq END) AS accepted_seq,
                        MAX(CASE WHEN kind IN ({lifecycle}) THEN seq END) AS state_seq,
                        COALESCE(MAX(attempt), 0) AS attempts
                 FROM journal_events
                 WHERE ($5::text IS NULL OR id = $5)
                 GROUP BY service, id)
             SELECT m.service, m.id, a.flow, a.at_us, s.kind, m.attempts
             FROM m JOIN journal_events a ON a.seq = m.accepted_seq
                    JOIN journal_events s ON s.seq = m.state_seq
             WHERE ($1::bigint IS NULL OR a.at_us >= $1) AND ($2::bigint IS NULL OR a.at_us < $2)
               AND ($3::text IS NULL OR a.flow = $3) AND s.kind IN ({selected})
             ORDER BY a.seq DESC
             LIMIT $4"
        );
        let rows = self.rows(
            &sql,
            &[
                &filter.since_us.map(int),
                &filter.until_us.map(int),
                &filter.flow,
                &filter.limit.map(int),
                &filter.id,
            ],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let kind: String = r.get(4);
            let Some(state) = EventKind::parse(&kind).and_then(MessageState::after) else {
                continue; // not selected by the query
            };
            let attempts: i64 = r.get(5);
            out.push(MessageSummary {
                service: r.get(0),
                id: r.get(1),
                flow: r.get(2),
                accepted_us: unsigned(r.get(3)),
                state,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            });
        }
        out.reverse();
        Ok(out)
    }

    fn recent(&self, page: &RecentPage) -> Result<Vec<RecentRequest>, JournalError> {
        let before = page.before.unwrap_or(i64::MAX);
        let listed = if page.failed { FAILED } else { ACCEPTED };
        let rows = self.rows(
            &RECENT.replace("{listed}", listed),
            &[&before, &i64::from(page.limit)],
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                row::recent_request(
                    (r.get(0), r.get(1), r.get(2)),
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                )
            })
            .collect())
    }
}
