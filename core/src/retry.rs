//! Retry policies per action, and the delay queue where retried messages
//! wait (`docs/ordering.md` explains both with examples).
//!
//! A policy is written in an action-mapping file, for one mapping key, in a
//! section (INI) or table (TOML) of its own:
//!
//! ```ini
//! [actionmapping]
//! ?Orders?charge = Payments.charge
//!
//! [retry ?Orders?charge]
//! max_attempts = 5
//! initial_delay_ms = 100
//! multiplier = 2
//! max_delay_ms = 5000
//! jitter = 0.2
//! no_retry = bad_request, unknown_action
//! ```
//!
//! ```toml
//! [actionmapping]
//! "?Orders?charge" = "Payments.charge"
//!
//! [retry."?Orders?charge"]
//! max_attempts = 5
//! initial_delay_ms = 100
//! multiplier = 2.0
//! max_delay_ms = 5000
//! jitter = 0.2
//! no_retry = ["bad_request", "unknown_action"]
//! ```
//!
//! The policy applies to every flow step that resolves to that mapping.
//! After attempt `n` fails, the next waits `min(initial × multiplierⁿ⁻¹,
//! max)`, shortened by up to `jitter` of itself at random ([`RetryPolicy::delay`]).
//! An error whose kind — the `name` of the error result ([`KINDS`]) — is in
//! `no_retry`, or the failure of attempt `max_attempts`, sends the message
//! to the dead-letter store. Waiting happens in the Subject's
//! [`DelayQueue`], never on a worker.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::catalog::action_key::ActionKey;
use crate::catalog::diagnostic::{Diagnostics, Location};
use crate::catalog::ini;

/// The error kinds an action step can end with: the `name` of an error
/// result made by a worker (`docs/protocol.md` lists the codes). These are
/// the names `no_retry` accepts.
pub const KINDS: [&str; 5] = [
    "bad_request",
    "action_failed",
    "action_panicked",
    "unknown_action",
    "no_mapping",
];

/// The longest delay a policy may ask for (a day).
pub const MAX_DELAY_MS: u64 = 86_400_000;

/// The most attempts a policy may allow.
pub const MAX_ATTEMPTS: u32 = 1000;

/// How the failures of one action are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: never retried).
    pub max_attempts: u32,
    /// The wait after the first failure.
    pub initial_delay: Duration,
    /// Each further wait is this many times the previous one.
    pub multiplier: f64,
    /// No wait is longer.
    pub max_delay: Duration,
    /// Each wait is shortened by a random part of it, up to this fraction
    /// (0: exactly the computed delay; 0.2: between 80% and 100% of it).
    pub jitter: f64,
    /// Error kinds that go to the dead-letter store at once.
    pub no_retry: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_delay: Duration::from_millis(100),
            multiplier: 2.0,
            max_delay: Duration::from_secs(30),
            jitter: 0.0,
            no_retry: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// The waits of this policy, as a [`Backoff`].
    pub fn backoff(&self) -> Backoff {
        Backoff {
            initial: self.initial_delay,
            multiplier: self.multiplier,
            max: self.max_delay,
            jitter: self.jitter,
        }
    }

    /// The wait after attempt `attempt` (1-based) failed, before the next:
    /// `min(initial × multiplier^(attempt−1), max)`, times `1 − jitter ×
    /// spread`, where `spread` is a random number in `[0, 1)` (from a
    /// [`crate::backoff::Jitter`]); see [`Backoff::delay`].
    pub fn delay(&self, attempt: u32, spread: f64) -> Duration {
        self.backoff().delay(attempt, spread)
    }

    /// True when an error of `kind` may be retried.
    pub fn retries(&self, kind: &str) -> bool {
        !self.no_retry.iter().any(|k| k == kind)
    }
}

/// Items that wait until a moment: the Subject's retried messages.
///
/// Due items come out earliest first, and in insertion order among equal
/// moments. It uses Tokio's clock, so tests run it on paused time.
#[derive(Debug)]
pub struct DelayQueue<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    next_seq: u64,
}

#[derive(Debug)]
struct Entry<T> {
    due: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

impl<T> Default for DelayQueue<T> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }
}

impl<T> DelayQueue<T> {
    /// `item` waits until `due`.
    pub fn push(&mut self, due: Instant, item: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(Entry { due, seq, item }));
    }

    /// When the next item is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.due)
    }

    /// The next item due at `now` or before.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.next_due()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(e)| e.item)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// The items waiting, in no particular order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.heap.iter().map(|Reverse(e)| &e.item)
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// Sleeps until `due`, or forever when there is nothing to wait for. A
/// plain `async` block: building it costs nothing, so the Subject's loop
/// can have it in every `select!`.
pub async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// A policy as written: for which mapping key, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyEntry {
    pub key: ActionKey,
    pub policy: RetryPolicy,
    pub location: Location,
}

/// A setting's value as read: INI text, or a TOML value.
enum Raw<'a> {
    Text(&'a str),
    Toml(&'a toml::Value),
}

impl Raw<'_> {
    fn number(&self) -> Option<f64> {
        match self {
            Raw::Text(text) => text.trim().parse().ok(),
            Raw::Toml(toml::Value::Integer(i)) => Some(*i as f64),
            Raw::Toml(toml::Value::Float(f)) => Some(*f),
            Raw::Toml(_) => None,
        }
    }

    fn whole(&self) -> Option<u64> {
        match self {
            Raw::Text(text) => text.trim().parse().ok(),
            Raw::Toml(toml::Value::Integer(i)) => u64::try_from(*i).ok(),
            Raw::Toml(_) => None,
        }
    }

    fn names(&self) -> Option<Vec<String>> {
        let split = |text: &str| {
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        match self {
            Raw::Text(text) => Some(split(text)),
            Raw::Toml(toml::Value::String(text)) => Some(split(text)),
            Raw::Toml(toml::Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Raw::Toml(_) => None,
        }
    }
}

/// Builds a policy from its settings, reporting every bad one.
fn build(
    key: &str,
    at: Location,
    settings: Vec<(&str, Raw<'_>, Location)>,
    diagnostics: &mut Diagnostics,
) -> Option<PolicyEntry> {
    let key = match ActionKey::parse(key) {
        Ok(key) => Some(key),
        Err(e) => {
            diagnostics.error(
                at.clone(),
                format!("retry policy for malformed action key {key:?}: {e}"),
            );
            None
        }
    };
    let mut policy = RetryPolicy::default();
    let mut seen: Vec<&str> = Vec::new();
    let mut ok = true;
    let mut max_delay_at: Option<Location> = None;
    for (name, value, location) in settings {
        let mut bad = |what: String| {
            diagnostics.error(location.clone(), format!("retry `{name}`: {what}"));
            false
        };
        if seen.contains(&name) {
            ok &= bad("set twice".to_owned());
            continue;
        }
        seen.push(name);
        let whole = |max: u64| value.whole().filter(|v| *v <= max);
        match name {
            "max_attempts" => match whole(u64::from(MAX_ATTEMPTS)).filter(|v| *v >= 1) {
                Some(v) => policy.max_attempts = u32::try_from(v).unwrap_or(MAX_ATTEMPTS),
                None => ok &= bad(format!("must be a whole number from 1 to {MAX_ATTEMPTS}")),
            },
            "initial_delay_ms" => match whole(MAX_DELAY_MS) {
                Some(v) => policy.initial_delay = Duration::from_millis(v),
                None => {
                    ok &= bad(format!(
                        "must be a whole number of ms from 0 to {MAX_DELAY_MS}"
                    ))
                }
            },
            "max_delay_ms" => match whole(MAX_DELAY_MS) {
                Some(v) => {
                    policy.max_delay = Duration::from_millis(v);
                    max_delay_at = Some(location.clone());
                }
                None => {
                    ok &= bad(format!(
                        "must be a whole number of ms from 0 to {MAX_DELAY_MS}"
                    ))
                }
            },
            "multiplier" => match value.number().filter(|v| (1.0..=100.0).contains(v)) {
                Some(v) => policy.multiplier = v,
                None => ok &= bad("must be a number from 1 to 100".to_owned()),
            },
            "jitter" => match value.number().filter(|v| (0.0..=1.0).contains(v)) {
                Some(v) => policy.jitter = v,
                None => {
                    ok &= bad("must be a number from 0 to 1 (a fraction of the delay)".to_owned())
                }
            },
            "no_retry" => match value.names() {
                Some(names) => {
                    for name in &names {
                        if !KINDS.contains(&name.as_str()) {
                            ok &= bad(format!(
                                "unknown error kind {name:?} (kinds: {})",
                                KINDS.join(", ")
                            ));
                        }
                    }
                    policy.no_retry = names;
                }
                None => ok &= bad("must be a list of error kinds".to_owned()),
            },
            _ => {
                ok &= bad("unknown setting (expected max_attempts, initial_delay_ms, multiplier, max_delay_ms, jitter, no_retry)".to_owned());
            }
        }
    }
    if policy.max_delay < policy.initial_delay {
        diagnostics.error(
            max_delay_at.unwrap_or_else(|| at.clone()),
            format!(
                "retry: max_delay_ms ({}) is less than initial_delay_ms ({})",
                policy.max_delay.as_millis(),
                policy.initial_delay.as_millis()
            ),
        );
        ok = false;
    }
    let key = key?;
    ok.then_some(PolicyEntry {
        key,
        policy,
        location: at,
    })
}

/// The name of the INI sections that hold retry policies: `[retry <key>]`.
pub(crate) fn ini_section_key(name: &str) -> Option<&str> {
    name.strip_prefix("retry")
        .filter(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
        .map(str::trim)
}

/// Reads the `[retry <key>]` sections of an INI mapping file. (Lines that
/// cannot be read at all are reported by [`crate::catalog::mapping::load_ini`],
/// which reads the same file.)
pub fn load_ini(file: &Arc<str>, text: &str, diagnostics: &mut Diagnostics) -> Vec<PolicyEntry> {
    let mut out = Vec::new();
    for section in ini::parse(file, text, &mut Diagnostics::default()) {
        let Some(key) = ini_section_key(&section.name) else {
            continue;
        };
        let at = Location::new(file, section.line);
        if key.is_empty() {
            diagnostics.error(at, "[retry] names no action key (expected `[retry <key>]`)");
            continue;
        }
        let mut settings = Vec::new();
        let mut complete = true;
        for entry in &section.entries {
            let location = Location::new(file, entry.line);
            match entry.value.as_deref() {
                Some(value) => settings.push((entry.key.as_str(), Raw::Text(value), location)),
                None => {
                    diagnostics.error(
                        location,
                        format!("retry setting {:?} has no value", entry.key),
                    );
                    complete = false;
                }
            }
        }
        if let Some(entry) = build(key, at, settings, diagnostics).filter(|_| complete) {
            out.push(entry);
        }
    }
    out
}

#[derive(Deserialize)]
struct RetryFile {
    #[serde(default)]
    retry: std::collections::BTreeMap<
        toml::Spanned<String>,
        std::collections::BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>>,
    >,
}

/// Reads the `[retry."<key>"]` tables of a TOML mapping file. (A file that
/// is not TOML is reported by [`crate::catalog::mapping::load_toml`].)
pub fn load_toml(file: &Arc<str>, text: &str, diagnostics: &mut Diagnostics) -> Vec<PolicyEntry> {
    let parsed: RetryFile = match toml::from_str(text) {
        Ok(parsed) => parsed,
        Err(e) => {
            if text.parse::<toml::Table>().is_ok() {
                // TOML, but `retry` is not a table of tables.
                diagnostics.toml_error(file, text, &e);
            }
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (key, table) in &parsed.retry {
        let at = Location::at_offset(file, text, key.span().start);
        let settings = table
            .iter()
            .map(|(name, value)| {
                (
                    name.get_ref().as_str(),
                    Raw::Toml(value.get_ref()),
                    Location::at_offset(file, text, name.span().start),
                )
            })
            .collect();
        out.extend(build(key.get_ref(), at, settings, diagnostics));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            initial_delay: ms(100),
            multiplier: 2.0,
            max_delay: ms(500),
            jitter: 0.0,
            no_retry: vec!["bad_request".into()],
        }
    }

    #[test]
    fn delays_grow_by_the_multiplier_up_to_the_max() {
        let p = policy();
        let delays: Vec<Duration> = (1..=6).map(|a| p.delay(a, 0.5)).collect();
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(500), ms(500), ms(500)]
        );
        // Huge attempts saturate at the max, never overflow.
        assert_eq!(p.delay(u32::MAX, 0.0), ms(500));
        assert!(p.retries("action_failed") && !p.retries("bad_request"));
    }

    #[test]
    fn jitter_only_shortens_within_its_fraction() {
        let p = RetryPolicy {
            jitter: 0.2,
            ..policy()
        };
        let mut jitter = crate::backoff::Jitter::seeded(7);
        let mut seen = Vec::new();
        for _ in 0..1000 {
            let d = p.delay(2, jitter.next_unit());
            assert!(d >= ms(160) && d <= ms(200), "{d:?}");
            seen.push(d);
        }
        seen.sort();
        assert!(
            seen[0] < ms(165) && seen[999] > ms(195),
            "spread over the range"
        );
    }

    /// On paused time: each retried item comes out when its delay has
    /// passed, not before, and items due together in insertion order.
    #[tokio::test(start_paused = true)]
    async fn the_delay_queue_releases_each_item_at_its_moment() {
        let p = policy();
        let start = Instant::now();
        let mut queue = DelayQueue::default();
        // Attempt a failed at 0: due at 100 ms; b failed its 3rd at 0: due
        // at 400 ms; c failed its 1st at 0 too: due at 100 ms, after a.
        queue.push(start + p.delay(1, 0.0), "a");
        queue.push(start + p.delay(3, 0.0), "b");
        queue.push(start + p.delay(1, 0.0), "c");
        let mut released = Vec::new();
        while !queue.is_empty() {
            sleep_until(queue.next_due()).await;
            while let Some(item) = queue.pop_due(Instant::now()) {
                released.push((item, Instant::now() - start));
            }
        }
        assert_eq!(released, [("a", ms(100)), ("c", ms(100)), ("b", ms(400))]);
        assert_eq!(queue.pop_due(Instant::now() + ms(10_000)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_due_is_not_released_early() {
        let mut queue = DelayQueue::default();
        let start = Instant::now();
        queue.push(start + ms(250), 1);
        tokio::time::advance(ms(249)).await;
        assert_eq!(queue.pop_due(Instant::now()), None);
        assert_eq!(queue.len(), 1);
        tokio::time::advance(ms(1)).await;
        assert_eq!(queue.pop_due(Instant::now()), Some(1));
        // With nothing queued, the sleep never ends.
        let never = tokio::time::timeout(ms(10_000), sleep_until(None)).await;
        assert!(never.is_err());
    }

    fn ini(text: &str) -> (Vec<PolicyEntry>, Diagnostics) {
        let mut d = Diagnostics::default();
        (load_ini(&Arc::from("m.ini"), text, &mut d), d)
    }

    fn toml(text: &str) -> (Vec<PolicyEntry>, Diagnostics) {
        let mut d = Diagnostics::default();
        (load_toml(&Arc::from("m.toml"), text, &mut d), d)
    }

    #[test]
    fn ini_and_toml_say_the_same() {
        let (from_ini, d) = ini(
            "[actionmapping]\n??x = C.x\n[retry ??x]\nmax_attempts = 6\ninitial_delay_ms = 100\nmultiplier = 2\nmax_delay_ms = 500\nno_retry = bad_request\n",
        );
        assert!(d.is_empty(), "{d}");
        let (from_toml, d) = toml(
            "[actionmapping]\n\"??x\" = \"C.x\"\n[retry.\"??x\"]\nmax_attempts = 6\ninitial_delay_ms = 100\nmultiplier = 2\nmax_delay_ms = 500\nno_retry = [\"bad_request\"]\n",
        );
        assert!(d.is_empty(), "{d}");
        assert_eq!(from_ini.len(), 1);
        assert_eq!(from_ini[0].policy, policy());
        assert_eq!(from_toml[0].policy, policy());
        assert_eq!(from_ini[0].key.to_string(), "??x");
        assert_eq!(
            (from_ini[0].location.line, from_toml[0].location.line),
            (3, 3)
        );
        // Unset settings keep their defaults.
        let (entries, d) = ini("[retry ??y]\n");
        assert!(d.is_empty(), "{d}");
        assert_eq!(entries[0].policy, RetryPolicy::default());
    }

    #[test]
    fn every_bad_setting_is_reported_with_its_line() {
        let (entries, d) = ini(
            "[retry ??x]\nmax_attempts = 0\nmultiplier = 0.5\njitter = 2\nno_retry = bad_request, oops\ndelay = 3\nmax_attempts = 2\nmax_delay_ms\n[retry]\n[retry bad key]\n[retry ??z]\ninitial_delay_ms = 100\nmax_delay_ms = 50\n",
        );
        assert!(entries.is_empty());
        let mut lines: Vec<u32> = d.errors().map(|e| e.location.line).collect();
        lines.sort_unstable();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7, 8, 9, 10, 13], "{d}");
        let text = d.to_string();
        for expected in [
            "m.ini:2: error: retry `max_attempts`: must be a whole number from 1 to 1000",
            "m.ini:5: error: retry `no_retry`: unknown error kind \"oops\"",
            "m.ini:6: error: retry `delay`: unknown setting",
            "m.ini:7: error: retry `max_attempts`: set twice",
            "m.ini:8: error: retry setting \"max_delay_ms\" has no value",
            "m.ini:9: error: [retry] names no action key",
            "m.ini:10: error: retry policy for malformed action key \"bad key\"",
            "m.ini:13: error: retry: max_delay_ms (50) is less than initial_delay_ms (100)",
        ] {
            assert!(text.contains(expected), "{expected}\nin\n{text}");
        }
        let (_, d) = toml("[retry.\"??x\"]\nmax_attempts = \"five\"\njitter = -1\n");
        let mut lines: Vec<u32> = d.errors().map(|e| e.location.line).collect();
        lines.sort_unstable();
        assert_eq!(lines, [2, 3], "{d}");
        let (_, d) = toml("retry = 5\n");
        assert_eq!(d.errors().count(), 1, "{d}");
        // Not TOML at all: left to the mapping loader.
        let (_, d) = toml("[[[\n");
        assert!(d.is_empty(), "{d}");
    }
}
