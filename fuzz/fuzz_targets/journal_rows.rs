//! Journal rows as read back: fuzzed rows written straight into the
//! `journal_events` table of a scratch SQLite journal, then every read of
//! `SqliteJournal` (unfinished, history, range, recent results, stats,
//! summaries, data size) and compaction. The row decoding (`Stored` →
//! `Event`, `Envelope::decode` of the envelope blob) is private to
//! `journal/sqlite.rs`, so it is reached through the database, as a node
//! recovering from a damaged or foreign journal would reach it. Errors are
//! fine; nothing may panic.
//!
//! Layout (see `Input`): a row count (mod 9); per row a flags byte, a kind
//! byte, a time byte, then service, id and flow chunks and, as the flags
//! say, attempt, worker, step, reason, envelope and payload; then the query
//! parameters: since and until (time bytes), a flow chunk (empty: none),
//! a limit byte and a state byte.
//!
//! Flags: bit 0 attempt, 1 worker, 2 step, 3 reason, 4 envelope, 5 payload
//! present (else NULL); bit 6 service and id stored as BLOBs, not TEXT;
//! bit 7 the envelope stored as TEXT, not a BLOB.
#![no_main]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use rusqlite::types::Value;
use rusqlite::{Connection, params};
use zmanager::journal::{
    Journal, MessageState, SqliteJournal, StateFilter, SummaryFilter, SyncMode,
};
use zmanager_fuzz::Input;

const KINDS: [&str; 7] = [
    "accepted",
    "dispatched",
    "suspended",
    "resumed",
    "completed",
    "dead_lettered",
    "bogus",
];

struct Scratch {
    journal: SqliteJournal,
    /// A second connection that writes rows as they are, past the
    /// journal's own encoding.
    writer: Connection,
}

/// One journal per process, in a directory of its own, emptied before
/// each input (stale directories of processes that are gone are removed).
fn scratch() -> &'static Mutex<Scratch> {
    static SCRATCH: OnceLock<Mutex<Scratch>> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let tmp = std::env::temp_dir();
        let prefix = "zmanager-fuzz-journal-";
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix(prefix)
                    && !PathBuf::from(format!("/proc/{pid}")).exists()
                {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = tmp.join(format!("{prefix}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let path = dir.join("zmanager.db");
        let journal = SqliteJournal::open_file(&path, SyncMode::Off).expect("scratch journal");
        let writer = Connection::open(&path).expect("second connection");
        writer
            .execute_batch("PRAGMA synchronous = OFF; PRAGMA busy_timeout = 5000;")
            .expect("pragmas");
        Mutex::new(Scratch { journal, writer })
    })
}

/// A time: small steps, and the edges of the column's range.
fn time(b: u8) -> i64 {
    match b {
        0xff => i64::MAX,
        0xfe => -1,
        0xfd => i64::MIN,
        b => i64::from(b) * 1000,
    }
}

/// An attempt or step: small, or past what a `u32` holds, or negative.
fn small(b: u8) -> i64 {
    match b {
        0xff => -1,
        0xfe => i64::MAX,
        0xfd => i64::from(u32::MAX) + 1,
        b => i64::from(b),
    }
}

fn text_or_blob(bytes: &[u8], blob: bool) -> Value {
    if blob {
        Value::Blob(bytes.to_vec())
    } else {
        Value::Text(String::from_utf8_lossy(bytes).into_owned())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut scratch = scratch().lock().unwrap_or_else(|e| e.into_inner());
    let mut keys = BTreeSet::new();
    {
        let tx = scratch.writer.transaction().expect("transaction");
        tx.execute("DELETE FROM journal_events", [])
            .expect("delete");
        let rows = input.byte() % 9;
        for _ in 0..rows {
            let flags = input.byte();
            let kind = match input.byte() % 8 {
                7 => String::from_utf8_lossy(input.chunk()).into_owned(),
                k => KINDS[usize::from(k)].to_owned(),
            };
            let at = time(input.byte());
            let (service, id) = (input.chunk(), input.chunk());
            let flow = String::from_utf8_lossy(input.chunk()).into_owned();
            let present = |bit: u8| flags & (1 << bit) != 0;
            let attempt = present(0).then(|| small(input.byte()));
            let worker = present(1).then(|| input.chunk().to_vec());
            let step = present(2).then(|| small(input.byte()));
            let reason = present(3).then(|| String::from_utf8_lossy(input.chunk()).into_owned());
            let envelope = present(4).then(|| text_or_blob(input.chunk(), !present(7)));
            let payload = present(5).then(|| input.chunk().to_vec());
            keys.insert((
                String::from_utf8_lossy(service).into_owned(),
                String::from_utf8_lossy(id).into_owned(),
            ));
            tx.execute(
                "INSERT INTO journal_events
                 (at_us, kind, service, id, flow, attempt, worker, step, reason, envelope, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    at,
                    kind,
                    text_or_blob(service, present(6)),
                    text_or_blob(id, present(6)),
                    flow,
                    attempt,
                    worker,
                    step,
                    reason,
                    envelope.unwrap_or(Value::Null),
                    payload
                ],
            )
            .expect("insert");
        }
        tx.commit().expect("commit");
    }
    let since = time(input.byte()).cast_unsigned();
    let until = time(input.byte()).cast_unsigned();
    let flow = String::from_utf8_lossy(input.chunk()).into_owned();
    let flow = (!flow.is_empty()).then_some(flow);
    let limit = input.byte();
    let state = match input.byte() % 8 {
        0 => StateFilter::Any,
        1 => StateFilter::Unfinished,
        2 => StateFilter::Is(MessageState::Accepted),
        3 => StateFilter::Is(MessageState::Suspended),
        4 => StateFilter::Is(MessageState::Resumed),
        5 => StateFilter::Is(MessageState::Completed),
        _ => StateFilter::Is(MessageState::DeadLettered),
    };

    let journal = &scratch.journal;
    let _ = journal.unfinished();
    let _ = journal.stats();
    let _ = journal.range(since, until, None);
    let _ = journal.range(since, until, flow.as_deref());
    let _ = journal.recent_results(since, usize::from(limit));
    for (service, id) in &keys {
        let _ = journal.history(service, id);
    }
    let _ = journal.summaries(&SummaryFilter::default());
    let _ = journal.summaries(&SummaryFilter {
        since_us: Some(since),
        until_us: Some(until),
        flow,
        id: keys.first().map(|(_, id)| id.clone()),
        state,
        limit: Some(u64::from(limit)),
    });
    let _ = journal.data_bytes();
    let _ = journal.compact_oldest(until, u64::from(limit % 4));
    let _ = journal.compact(since);
});
