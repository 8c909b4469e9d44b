//! Retry policies per action, and the delay queue where retried messages
//! wait (`docs/ordering.md` explains both with examples).
//!
//! A policy is written in an action-mapping file, for one mapping key, in a
//! section (INI) or table (TOML) of its own; the mapping parser
//! ([`crate::catalog::mapping`]) reads it with the rest of the file, and
//! checks its settings here:
//!
//! ```ini
//! [actionmapping]
//! ?Orders?charge = Payments.charge
//!
//! [retry ?Orders?charge]
//! max_attempts = 5
//! initial_delay = 100ms
//! multiplier = 2
//! max_delay = 5s
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
//! initial_delay = "100ms"
//! multiplier = 2.0
//! max_delay = "5s"
//! jitter = 0.2
//! no_retry = ["bad_request", "unknown_action"]
//! ```
//!
//! The policy applies to every flow step that resolves to that mapping
//! ([`crate::Catalog::retry_policy`]). After attempt `n` fails, the next
//! waits `min(initial × multiplierⁿ⁻¹, max)`, shortened by up to `jitter`
//! of itself at random ([`RetryPolicy::delay`], a [`Backoff`]). An error
//! whose kind — the `name` of the error result ([`KINDS`]) — is in
//! `no_retry`, or the failure of attempt `max_attempts`, sends the message
//! to the dead-letter store. Waiting happens in the Subject's
//! [`DelayQueue`], never on a worker.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::catalog::action_key::ActionKey;
use crate::catalog::diagnostic::{Diagnostics, Location};

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
/// moments. It keeps no clock: [`DelayQueue::pop_due`] is told the moment,
/// so the Subject's core pops what is due at its input's `Now`, and its
/// shell sleeps on Tokio's clock until [`DelayQueue::next_due`]. That is
/// why this is not `tokio_util::time::DelayQueue`, which judges expiry on
/// Tokio's clock and must be polled from a task (`docs/dependencies.md`).
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

/// A setting's value as the mapping parser read it: INI text, or a TOML
/// value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Text(&'a str),
    Toml(&'a toml::Value),
}

/// One `name = value` line of a policy, and where it is.
#[derive(Debug, Clone)]
pub(crate) struct Setting<'a> {
    pub(crate) name: &'a str,
    pub(crate) value: Value<'a>,
    pub(crate) location: Location,
}

impl Value<'_> {
    fn number(&self) -> Option<f64> {
        match self {
            Value::Text(text) => text.trim().parse().ok(),
            Value::Toml(toml::Value::Integer(i)) => Some(*i as f64),
            Value::Toml(toml::Value::Float(f)) => Some(*f),
            Value::Toml(_) => None,
        }
    }

    fn whole(&self) -> Option<u64> {
        match self {
            Value::Text(text) => text.trim().parse().ok(),
            Value::Toml(toml::Value::Integer(i)) => u64::try_from(*i).ok(),
            Value::Toml(_) => None,
        }
    }

    /// A duration: text with units (`"100ms"`, `"5s"`) or a whole number
    /// of milliseconds (`crate::node::duration`).
    fn duration(&self) -> Option<Duration> {
        match self {
            Value::Text(text) => crate::node::duration::parse(text).ok(),
            Value::Toml(toml::Value::String(text)) => crate::node::duration::parse(text).ok(),
            Value::Toml(toml::Value::Integer(i)) => {
                u64::try_from(*i).ok().map(Duration::from_millis)
            }
            Value::Toml(_) => None,
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
            Value::Text(text) => Some(split(text)),
            Value::Toml(toml::Value::String(text)) => Some(split(text)),
            Value::Toml(toml::Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Value::Toml(_) => None,
        }
    }
}

/// The policy for mapping key `key`, written at `at`, from its settings
/// (each is optional: [`RetryPolicy::default`] gives the rest). Reports
/// every bad setting with its line; `None` when there is one, or when `key`
/// is not an action key.
pub(crate) fn read_policy(
    key: &str,
    at: Location,
    settings: Vec<Setting<'_>>,
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
    for Setting {
        name,
        value,
        location,
    } in settings
    {
        let mut bad = |what: String| {
            diagnostics.error(location.clone(), format!("retry `{name}`: {what}"));
            false
        };
        // `initial_delay_ms` is `initial_delay` written the old way.
        let setting = match name {
            "initial_delay_ms" => "initial_delay",
            "max_delay_ms" => "max_delay",
            other => other,
        };
        if seen.contains(&setting) {
            ok &= bad("set twice".to_owned());
            continue;
        }
        seen.push(setting);
        let whole = |max: u64| value.whole().filter(|v| *v <= max);
        let delay = || {
            value
                .duration()
                .filter(|d| *d <= Duration::from_millis(MAX_DELAY_MS))
        };
        let delay_error = || {
            format!(
                "must be a duration from 0 to {} (\"100ms\", \"5s\"), or whole milliseconds",
                crate::node::duration::show(Duration::from_millis(MAX_DELAY_MS))
            )
        };
        match name {
            "max_attempts" => match whole(u64::from(MAX_ATTEMPTS)).filter(|v| *v >= 1) {
                Some(v) => policy.max_attempts = u32::try_from(v).unwrap_or(MAX_ATTEMPTS),
                None => ok &= bad(format!("must be a whole number from 1 to {MAX_ATTEMPTS}")),
            },
            // The `_ms` names are the old ones, read the same.
            "initial_delay" | "initial_delay_ms" => match delay() {
                Some(v) => policy.initial_delay = v,
                None => ok &= bad(delay_error()),
            },
            "max_delay" | "max_delay_ms" => match delay() {
                Some(v) => {
                    policy.max_delay = v;
                    max_delay_at = Some(location.clone());
                }
                None => ok &= bad(delay_error()),
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
                ok &= bad("unknown setting (expected max_attempts, initial_delay, multiplier, max_delay, jitter, no_retry)".to_owned());
            }
        }
    }
    if policy.max_delay < policy.initial_delay {
        diagnostics.error(
            max_delay_at.unwrap_or_else(|| at.clone()),
            format!(
                "retry: max_delay ({}) is less than initial_delay ({})",
                crate::node::duration::show(policy.max_delay),
                crate::node::duration::show(policy.initial_delay)
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
}
