//! Ordering keys: the requests of an ordered flow that share a key are
//! processed one at a time, in the order the Subject accepted them; requests
//! with different keys run in parallel (`docs/ordering.md`).
//!
//! A flow declares where its key comes from with `order_by` ([`OrderBy`]):
//! the envelope's `order_key` field, set by the service, or a field of the
//! request's payload. The Subject reads the key once, at acceptance, and
//! writes it into the envelope's `order_key`, where it travels with the
//! message to the end of its flow.
//!
//! The [`KeyGate`] is the state machine: a key is *held* by one request from
//! the moment it starts until its flow ends (a result, a dead letter, or a
//! refusal), through redeliveries, retry delays and `@ASYNC` suspensions;
//! the requests behind it wait in acceptance order. It has no I/O: the
//! Subject drives it, and the property test below checks it on random
//! operation sequences.

use std::collections::{HashMap, VecDeque};

use crate::inflight::MessageKey;
use crate::wire::envelope::Envelope;

/// Where an ordered flow reads each request's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderBy {
    /// The envelope's `order_key`, set by the service (`order_by =
    /// envelope`).
    Envelope,
    /// A field of the payload, a MessagePack map: `order_by =
    /// payload.account` names its `account` entry; `payload.a.b` the `b`
    /// entry of the map at `a`. The value must be a string or an integer.
    Payload(Vec<String>),
}

impl OrderBy {
    /// Parses `envelope` or `payload.<field>[.<field>…]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "envelope" {
            return Ok(Self::Envelope);
        }
        let Some(path) = text.strip_prefix("payload.") else {
            return Err(format!(
                "order_by {text:?} must be `envelope` or `payload.<field>` (a field of the request's payload)"
            ));
        };
        let fields: Vec<String> = path.split('.').map(str::to_owned).collect();
        if fields.iter().any(String::is_empty) {
            return Err(format!("order_by {text:?} has an empty field name"));
        }
        Ok(Self::Payload(fields))
    }

    /// The ordering key of a request, or why it has none (the request is
    /// then refused: an ordered flow never runs a request out of order).
    pub fn key_of(&self, envelope: &Envelope, payload: &[u8]) -> Result<String, String> {
        match self {
            Self::Envelope if envelope.order_key.is_empty() => Err(
                "the flow is ordered by the envelope's `order_key`, which this request does not set"
                    .to_owned(),
            ),
            Self::Envelope => Ok(envelope.order_key.clone()),
            Self::Payload(path) => payload_key(path, payload),
        }
    }
}

impl std::fmt::Display for OrderBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Envelope => f.write_str("envelope"),
            Self::Payload(path) => write!(f, "payload.{}", path.join(".")),
        }
    }
}

/// Reads the string or integer at `path` in a MessagePack map.
fn payload_key(path: &[String], payload: &[u8]) -> Result<String, String> {
    let name = || format!("payload.{}", path.join("."));
    let value = zmanager_sdk::decode_value(payload)
        .map_err(|e| format!("the payload does not decode ({e}), so it has no {}", name()))?;
    let mut at = &value;
    for field in path {
        let rmpv::Value::Map(entries) = at else {
            return Err(format!(
                "the flow is ordered by {}, but the payload is not a map there",
                name()
            ));
        };
        at = entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(field))
            .map(|(_, v)| v)
            .ok_or_else(|| {
                format!(
                    "the flow is ordered by {}, which this request's payload does not have",
                    name()
                )
            })?;
    }
    match at {
        rmpv::Value::String(s) => s.as_str().map(str::to_owned).ok_or_else(|| {
            format!(
                "the flow is ordered by {}, which is not valid UTF-8",
                name()
            )
        }),
        rmpv::Value::Integer(i) => Ok(i.to_string()),
        _ => Err(format!(
            "the flow is ordered by {}, which must be a string or an integer",
            name()
        )),
    }
}

/// A key of one flow: keys of different flows never block each other.
pub type GroupKey = (String, String);

/// The key's group of `envelope`, if it has an ordering key.
pub fn group_of(envelope: &Envelope) -> Option<GroupKey> {
    (!envelope.order_key.is_empty()).then(|| (envelope.flow.clone(), envelope.order_key.clone()))
}

#[derive(Debug)]
struct Group<T> {
    /// The request that holds the key; `None` while the next one is ready
    /// to start (the key is then in [`KeyGate::ready`]).
    holder: Option<MessageKey>,
    waiting: VecDeque<(MessageKey, T)>,
}

/// One request per key at a time; the others wait in arrival order.
///
/// A key is free (absent), held by one request, or ready: its holder ended
/// and the first waiting request may start (the Subject starts ready
/// requests when its queue has room, see [`KeyGate::next_ready`]).
#[derive(Debug)]
pub struct KeyGate<T> {
    groups: HashMap<GroupKey, Group<T>>,
    ready: VecDeque<GroupKey>,
    waiting: usize,
}

impl<T> Default for KeyGate<T> {
    fn default() -> Self {
        Self {
            groups: HashMap::new(),
            ready: VecDeque::new(),
            waiting: 0,
        }
    }
}

impl<T> KeyGate<T> {
    /// A request `id` with key `group` arrives. When the key is free, the
    /// request now holds it and is handed back to be started; otherwise it
    /// waits behind the others (`None`).
    pub fn admit(&mut self, group: GroupKey, id: MessageKey, item: T) -> Option<T> {
        match self.groups.get_mut(&group) {
            Some(g) => {
                g.waiting.push_back((id, item));
                self.waiting += 1;
                None
            }
            None => {
                self.groups.insert(
                    group,
                    Group {
                        holder: Some(id),
                        waiting: VecDeque::new(),
                    },
                );
                Some(item)
            }
        }
    }

    /// The request `id` ended (finished, dead-lettered or refused). If it
    /// held `group`, the key is freed, or made ready for the next request;
    /// returns whether it held it. Anything else (a request that never held
    /// the key, an end reported twice) changes nothing.
    pub fn release(&mut self, group: &GroupKey, id: &MessageKey) -> bool {
        let Some(g) = self.groups.get_mut(group) else {
            return false;
        };
        if g.holder.as_ref() != Some(id) {
            return false;
        }
        if g.waiting.is_empty() {
            self.groups.remove(group);
        } else {
            g.holder = None;
            self.ready.push_back(group.clone());
        }
        true
    }

    /// The next request whose key became free, oldest release first; it
    /// now holds its key.
    pub fn next_ready(&mut self) -> Option<T> {
        let group = self.ready.pop_front()?;
        let g = self.groups.get_mut(&group)?;
        let (id, item) = g.waiting.pop_front()?;
        g.holder = Some(id);
        self.waiting -= 1;
        Some(item)
    }

    /// True when a request is ready to start.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The requests waiting for their key, in no particular order.
    pub(crate) fn waiting(&self) -> impl Iterator<Item = &T> {
        self.groups
            .values()
            .flat_map(|g| g.waiting.iter().map(|(_, item)| item))
    }

    /// Requests waiting for their key (ready ones included).
    pub fn waiting_len(&self) -> usize {
        self.waiting
    }

    /// Keys held or ready.
    pub fn keys_len(&self) -> usize {
        self.groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u32) -> MessageKey {
        ("s".to_owned(), format!("m{n}"))
    }

    fn group(k: u8) -> GroupKey {
        ("F".to_owned(), format!("k{k}"))
    }

    #[test]
    fn same_key_waits_other_keys_go() {
        let mut gate = KeyGate::default();
        assert_eq!(gate.admit(group(1), id(1), 1), Some(1));
        assert_eq!(gate.admit(group(1), id(2), 2), None);
        assert_eq!(gate.admit(group(2), id(3), 3), Some(3));
        assert_eq!(gate.admit(group(1), id(4), 4), None);
        assert_eq!(gate.waiting_len(), 2);
        assert_eq!(gate.next_ready(), None, "nothing released yet");
        // Not the holder: nothing happens.
        assert!(!gate.release(&group(1), &id(2)));
        assert!(gate.release(&group(1), &id(1)));
        assert!(!gate.release(&group(1), &id(1)), "released twice");
        assert_eq!(gate.next_ready(), Some(2));
        assert!(gate.release(&group(1), &id(2)));
        assert_eq!(gate.next_ready(), Some(4));
        assert!(gate.release(&group(1), &id(4)));
        assert!(gate.release(&group(2), &id(3)));
        assert_eq!((gate.keys_len(), gate.waiting_len()), (0, 0));
    }

    #[test]
    fn order_by_parses_and_reads_keys() {
        assert_eq!(OrderBy::parse("envelope"), Ok(OrderBy::Envelope));
        let by = OrderBy::parse("payload.account.id").unwrap();
        assert_eq!(by.to_string(), "payload.account.id");
        assert!(OrderBy::parse("account").is_err());
        assert!(OrderBy::parse("payload.").is_err());
        assert!(OrderBy::parse("payload.a..b").is_err());

        let payload = |v: rmpv::Value| {
            let mut out = Vec::new();
            rmpv::encode::write_value(&mut out, &v).unwrap();
            out
        };
        let map = |k: &str, v: rmpv::Value| rmpv::Value::Map(vec![(k.into(), v)]);
        let e = Envelope::request("m", "F");
        let nested = payload(map("account", map("id", "acc-7".into())));
        assert_eq!(by.key_of(&e, &nested), Ok("acc-7".to_owned()));
        let number = payload(map("account", map("id", 42.into())));
        assert_eq!(by.key_of(&e, &number), Ok("42".to_owned()));
        for bad in [
            payload(map("account", 42.into())),
            payload(map("other", 1.into())),
            payload(map("account", map("id", rmpv::Value::Nil))),
            vec![0xc1],
        ] {
            assert!(by.key_of(&e, &bad).is_err(), "{bad:x?}");
        }
        assert!(OrderBy::Envelope.key_of(&e, &[]).is_err());
        let mut keyed = e.clone();
        keyed.order_key = "k".into();
        assert_eq!(OrderBy::Envelope.key_of(&keyed, &[]), Ok("k".to_owned()));
        assert_eq!(group_of(&keyed), Some(("F".to_owned(), "k".to_owned())));
        assert_eq!(group_of(&e), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A new request with key `k`.
        Admit(u8),
        /// The `i`th running request ends.
        End(usize),
        /// A release by a request that does not hold the key.
        Stray(u8, u32),
        /// The Subject starts a ready request.
        Start,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..4).prop_map(Op::Admit),
            2 => (0usize..8).prop_map(Op::End),
            1 => (0u8..4, 0u32..64).prop_map(|(k, n)| Op::Stray(k, n)),
            2 => Just(Op::Start),
        ]
    }

    proptest! {
        /// Against a model: per key, requests start in admission order and
        /// one at a time; every admitted request starts exactly once; the
        /// counts agree; a stray release changes nothing.
        #[test]
        fn one_at_a_time_in_order_and_nothing_lost(ops in proptest::collection::vec(op(), 0..300)) {
            let mut gate: KeyGate<(u8, u32)> = KeyGate::default();
            let mut next = 0u32;
            // Admitted per key, in order; started per key, in order.
            let mut admitted: HashMap<u8, Vec<u32>> = HashMap::new();
            let mut started: HashMap<u8, Vec<u32>> = HashMap::new();
            let mut running: Vec<(u8, u32)> = Vec::new();
            let start = |item: (u8, u32), running: &mut Vec<(u8, u32)>, started: &mut HashMap<u8, Vec<u32>>| {
                running.push(item);
                started.entry(item.0).or_default().push(item.1);
            };
            let check_step = |gate: &KeyGate<(u8, u32)>, admitted: &HashMap<u8, Vec<u32>>, started: &HashMap<u8, Vec<u32>>, running: &[(u8, u32)]| -> Result<(), TestCaseError> {
                let total: usize = admitted.values().map(Vec::len).sum();
                let begun: usize = started.values().map(Vec::len).sum();
                prop_assert_eq!(gate.waiting_len(), total - begun);
                for (k, list) in started {
                    prop_assert!(admitted[k].starts_with(list), "key {} started {:?} of {:?}", k, list, admitted[k]);
                    prop_assert!(running.iter().filter(|(rk, _)| rk == k).count() <= 1);
                }
                Ok(())
            };
            for op in ops {
                match op {
                    Op::Admit(k) => {
                        let n = next;
                        next += 1;
                        admitted.entry(k).or_default().push(n);
                        if let Some(item) = gate.admit(group(k), id(n), (k, n)) {
                            start(item, &mut running, &mut started);
                        }
                    }
                    Op::End(i) => {
                        if !running.is_empty() {
                            let (k, n) = running.remove(i % running.len());
                            prop_assert!(gate.release(&group(k), &id(n)));
                        }
                    }
                    Op::Stray(k, n) => {
                        if !running.contains(&(k, n)) {
                            prop_assert!(!gate.release(&group(k), &id(n)));
                        }
                    }
                    Op::Start => {
                        if let Some(item) = gate.next_ready() {
                            start(item, &mut running, &mut started);
                        }
                    }
                }
                check_step(&gate, &admitted, &started, &running)?;
            }
            // Everything left runs to the end, each key in order.
            loop {
                while let Some(item) = gate.next_ready() {
                    start(item, &mut running, &mut started);
                }
                let Some((k, n)) = running.pop() else { break };
                prop_assert!(gate.release(&group(k), &id(n)));
                check_step(&gate, &admitted, &started, &running)?;
            }
            prop_assert_eq!(&started, &admitted);
            prop_assert_eq!((gate.keys_len(), gate.waiting_len(), gate.has_ready()), (0, 0, false));
        }
    }
}
