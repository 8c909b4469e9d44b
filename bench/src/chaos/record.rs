//! The at-least-once multiplicity: how many times the flow's action ran
//! per request, read from the lines it appended to a file (one a call, as
//! Probe's `record` writes them). A line names its request by one of its
//! whitespace-separated fields: the request's sequence number (`{seq}` in
//! the payload), or its id.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

/// What the record file says.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Multiplicity {
    /// Lines read (calls recorded), of this run's requests.
    pub calls: u64,
    /// Lines that name no request of this run.
    pub foreign_lines: u64,
    /// Requests the action ran for at least once.
    pub ids_run: u64,
    /// The most runs of one request.
    pub max_runs: u64,
    /// Requests the action ran for more than once.
    pub ids_run_more_than_once: u64,
    /// Runs beyond the first, over all requests.
    pub extra_runs: u64,
    /// Requests with an ok result and no recorded run.
    pub answered_not_run: u64,
    /// How many requests ran how many times (`{"1": 1990, "2": 10}`).
    pub histogram: BTreeMap<u64, u64>,
    /// The requests that ran most often, most first (at most 20).
    pub most_run: Vec<(String, u64)>,
}

/// Reads `path` from byte `from` (what the run appended). `seq_of` maps a
/// field to a request; `ok` says whether a request had an ok result.
pub fn read(
    path: &Path,
    from: u64,
    field: usize,
    total: u64,
    seq_of: impl Fn(&str) -> Option<u64>,
    id_of: impl Fn(u64) -> String,
    ok: impl Fn(u64) -> bool,
) -> Result<Multiplicity, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let start = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[start..]);
    let mut runs = vec![0u64; usize::try_from(total).unwrap_or(0)];
    let mut m = Multiplicity::default();
    for line in text.lines() {
        let seq = line
            .split_whitespace()
            .nth(field.saturating_sub(1))
            .and_then(|f| {
                f.parse::<u64>()
                    .ok()
                    .filter(|s| *s < total)
                    .or_else(|| seq_of(f))
            });
        match seq.and_then(|s| runs.get_mut(usize::try_from(s).ok()?)) {
            Some(n) => {
                *n += 1;
                m.calls += 1;
            }
            None => m.foreign_lines += 1,
        }
    }
    let mut most: Vec<(u64, u64)> = Vec::new();
    for (seq, &n) in runs.iter().enumerate() {
        let seq = seq as u64;
        *m.histogram.entry(n).or_default() += 1;
        if n == 0 {
            if ok(seq) {
                m.answered_not_run += 1;
            }
            continue;
        }
        m.ids_run += 1;
        m.max_runs = m.max_runs.max(n);
        if n > 1 {
            m.ids_run_more_than_once += 1;
            m.extra_runs += n - 1;
            most.push((seq, n));
        }
    }
    m.histogram.remove(&0);
    most.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    m.most_run = most
        .into_iter()
        .take(20)
        .map(|(seq, n)| (id_of(seq), n))
        .collect();
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_runs_per_request_from_what_was_appended() {
        let path = std::env::temp_dir().join(format!("chaos-record-{}", std::process::id()));
        let old = "k 0 1 5\n";
        std::fs::write(
            &path,
            format!("{old}k 0 1 10\nk 1 1 11\nk 1 2 12\nk 1 3 13\nk run-2 1 14\nother\nk 99 1 1\n"),
        )
        .unwrap();
        let seq_of = |f: &str| f.strip_prefix("run-")?.parse().ok();
        let m = read(
            &path,
            old.len() as u64,
            2,
            4,
            seq_of,
            |s| format!("run-{s}"),
            |s| s == 3,
        )
        .unwrap();
        assert_eq!((m.calls, m.foreign_lines), (5, 2));
        assert_eq!((m.ids_run, m.max_runs), (3, 3));
        assert_eq!((m.ids_run_more_than_once, m.extra_runs), (1, 2));
        assert_eq!(m.answered_not_run, 1);
        assert_eq!(m.histogram, BTreeMap::from([(1, 2), (3, 1)]));
        assert_eq!(m.most_run, [("run-1".to_owned(), 3)]);
        std::fs::remove_file(&path).unwrap();
    }
}
