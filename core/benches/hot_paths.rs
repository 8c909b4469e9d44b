//! The node's hot paths, one request at a time: what each costs in CPU,
//! without sockets. `docs/performance.md` puts these figures next to the
//! whole-system ones of `zmanager bench`.
//!
//! Run with `cargo bench -p zmanager --bench hot_paths`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use zmanager::catalog::action_key::ActionKey;
use zmanager::catalog::source::{Format, SourceFile};
use zmanager::catalog::topic::Topic;
use zmanager::catalog::{Catalog, StepRole};
use zmanager::components::registry::Registry;
use zmanager::dedupe::Recent;
use zmanager::inflight::{InFlightTable, key_of};
use zmanager::journal::{Event, Journal, SqliteJournal, SyncMode};
use zmanager::node::config::NodeConfig;
use zmanager::wire::envelope::{Envelope, Kind, now_us};
use zmanager::wire::{self, Message};
use zmanager::worker::executor::Executor;

/// A request as `zmanager bench`'s services send it.
fn request(id: u64) -> Envelope {
    let mut e = Envelope::request(id.to_string(), "Echo");
    e.service = "bench-12345-0".into();
    e.reply_to = "@reply~bench-12345-0~".into();
    e.created_us = now_us();
    e
}

/// The same request as the Subject hands it to a worker.
fn work(id: u64) -> Message {
    let mut e = request(id);
    e.step = 1;
    e.key = "?Echo?echo".into();
    e.attempt = 1;
    e.accepted_us = now_us();
    Message::new(
        e,
        Bytes::from(
            vec![0xc4, 62]
                .into_iter()
                .chain([7; 62])
                .collect::<Vec<u8>>(),
        ),
    )
}

fn catalog() -> Catalog {
    // The built-in flows and mappings, and mappings that make resolution
    // walk further down DigitalPy's order.
    let (mut catalog, d) = NodeConfig::default().load_catalog();
    assert!(!d.has_errors(), "{d}");
    let extra = [SourceFile::new(
        "bench.ini",
        "[actionmapping]\nSubject?IAMConnection?Connection = Iam.connection\n??authorize = Iam.authorize\n?Orders? = Orders.any\n",
        Format::Ini,
    )];
    let (more, d) = Catalog::build(&[], &extra);
    assert!(!d.has_errors(), "{d}");
    for m in more.mappings.iter() {
        let mut d = zmanager::Diagnostics::default();
        catalog.mappings.insert(m.clone(), &mut d);
    }
    catalog
}

fn action_keys(c: &mut Criterion) {
    let mut g = c.benchmark_group("action_key");
    g.bench_function("parse s?c@DECO?a", |b| {
        b.iter(|| ActionKey::parse(black_box("Subject?IAMConnection@PUBLISH?Connection")))
    });
    g.bench_function("parse ??done", |b| {
        b.iter(|| ActionKey::parse(black_box("??done")))
    });
    let catalog = catalog();
    let exact = ActionKey::parse("Subject?IAMConnection?Connection").unwrap();
    let by_action = ActionKey::parse("Sender?Ctx?authorize").unwrap();
    let by_context = ActionKey::parse("Sender?Orders?ship").unwrap();
    g.bench_function("resolve s?c?a (1st form)", |b| {
        b.iter(|| catalog.mappings.resolve(black_box(&exact)).is_some())
    });
    g.bench_function("resolve ??a (6th form)", |b| {
        b.iter(|| catalog.mappings.resolve(black_box(&by_action)).is_some())
    });
    g.bench_function("resolve ?c? (7th form)", |b| {
        b.iter(|| catalog.mappings.resolve(black_box(&by_context)).is_some())
    });
    g.bench_function("topic of a key", |b| {
        b.iter(|| Topic::new(black_box("IAMConnection"), black_box(&exact)).to_string())
    });
    g.finish();
}

fn envelopes(c: &mut Criterion) {
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Elements(1));
    let req = request(123_456);
    let bytes = req.encode();
    let mut result = work(123_456).envelope;
    result.kind = Kind::Result;
    result.step = 2;
    result.key = "??done".into();
    let result_bytes = result.encode();
    g.bench_function("encode request", |b| b.iter(|| black_box(&req).encode()));
    g.bench_function("decode request", |b| {
        b.iter(|| Envelope::decode(black_box(&bytes)).unwrap())
    });
    g.bench_function("encode result", |b| b.iter(|| black_box(&result).encode()));
    g.bench_function("decode result", |b| {
        b.iter(|| Envelope::decode(black_box(&result_bytes)).unwrap())
    });
    g.bench_function("clone", |b| b.iter(|| black_box(&result).clone()));
    g.finish();

    let mut g = c.benchmark_group("wire");
    let message = work(1);
    g.throughput(Throughput::Elements(1));
    g.bench_function("topic_message (publish)", |b| {
        b.iter(|| wire::topic_message(black_box("@reply~bench-12345-0~"), black_box(&message)))
    });
    let frames = wire::topic_message("Echo~~~Echo~Push", &message);
    g.bench_function("decode_topic_message (intake)", |b| {
        b.iter(|| wire::decode_topic_message(black_box(&frames)).unwrap())
    });
    for n in [1u64, 64] {
        let batch: Vec<Message> = (0..n).map(work).collect();
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("work batch of {n}"), |b| {
            b.iter(|| wire::work(black_box(&batch)))
        });
        let frames = wire::work(&batch);
        g.bench_function(format!("decode_to_worker batch of {n}"), |b| {
            b.iter(|| wire::decode_to_worker(black_box(&frames)).unwrap())
        });
    }
    g.finish();
}

/// The Subject's decision for a request, as `Subject::accept` makes it:
/// the flow, the step the request is at, the next step's role and key.
fn route(catalog: &Catalog, envelope: &mut Envelope) -> bool {
    let Some(routed) = catalog.flow(&envelope.flow) else {
        return false;
    };
    let position = if envelope.key.is_empty() {
        Some(0)
    } else {
        ActionKey::parse(&envelope.key)
            .ok()
            .and_then(|k| routed.flow.position(&k))
    };
    let Some(position) = position else {
        return false;
    };
    let next = position + 1;
    envelope.step = u32::try_from(next).unwrap_or(u32::MAX);
    envelope.key = routed
        .flow
        .steps
        .get(next)
        .map(|s| s.key.to_string())
        .unwrap_or_default();
    envelope.accepted_us = now_us();
    matches!(routed.roles.get(next), Some((StepRole::Action(_), _)))
}

fn subject(c: &mut Criterion) {
    let mut g = c.benchmark_group("subject");
    g.throughput(Throughput::Elements(1));
    let catalog = catalog();
    g.bench_function("route a request at its entry", |b| {
        b.iter_batched_ref(|| request(1), |e| route(&catalog, e), BatchSize::SmallInput)
    });
    g.bench_function("route a request at a named step", |b| {
        b.iter_batched_ref(
            || {
                let mut e = request(1);
                e.flow = "Greeting".into();
                e.key = "?Greeting?trim".into();
                e
            },
            |e| route(&catalog, e),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("result_topic", |b| {
        let e = request(1);
        b.iter(|| zmanager::subject::result_topic(black_box(&e)))
    });
    g.finish();

    // The in-flight table: a request's whole life in it (enqueue, dispatch
    // in a batch, completion), per request, with two workers.
    let mut g = c.benchmark_group("inflight");
    for batch in [1usize, 64] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(
            format!("enqueue+dispatch+complete, batches of {batch}"),
            |b| {
                let mut table = InFlightTable::new(10_000);
                for (n, w) in [b"w1", b"w2"].into_iter().enumerate() {
                    let w = Bytes::from_static(w);
                    table.worker_ready(w.clone(), 256, n as u32 + 1, Instant::now());
                    // The catalog version of these messages (0: the
                    // node's own), as a worker's SERVES says.
                    table.serve(&w, &[0]);
                }
                let mut next = 0u64;
                b.iter_batched(
                    || {
                        let first = next;
                        next += batch as u64;
                        (first..next).map(work).collect::<Vec<_>>()
                    },
                    |messages| {
                        for m in messages {
                            table.enqueue(m).unwrap();
                        }
                        let (worker, sent) = table.next_batch(batch, Instant::now()).unwrap();
                        for m in &sent {
                            table.complete(&worker, &m.envelope).unwrap();
                        }
                    },
                    BatchSize::SmallInput,
                )
            },
        );
    }
    g.finish();

    // The dedupe store at its bound (the default 10,000 results): each
    // result remembered drops the oldest, as under load.
    let mut g = c.benchmark_group("dedupe");
    g.bench_function("insert at capacity (10,000)", |b| {
        let mut recent = Recent::new(Duration::from_secs(60), 10_000, usize::MAX);
        let now = Instant::now();
        let mut next = 0u64;
        for _ in 0..10_000 {
            let m = work(next);
            next += 1;
            let m = Arc::new(m);
            recent.insert((&m.envelope.service, &m.envelope.id), Arc::clone(&m), now);
        }
        b.iter_batched(
            || {
                next += 1;
                Arc::new(work(next))
            },
            |m| recent.insert((&m.envelope.service, &m.envelope.id), Arc::clone(&m), now),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    // A worker's part: running the echo flow's one action.
    let mut g = c.benchmark_group("executor");
    g.throughput(Throughput::Elements(1));
    let executor = Executor::new(Arc::new(catalog), Registry::linked());
    g.bench_function("run Echo (one action step)", |b| {
        b.iter_batched(|| work(1), |m| executor.run(m), BatchSize::SmallInput)
    });
    g.finish();
}

/// A request payload of about `size` bytes as services send them: maps of
/// a few typed fields (one record of 64 bytes; an array of such records
/// for more), so the check reads many markers, not one long string.
fn payload(size: usize) -> Vec<u8> {
    use rmpv::Value;
    let record = |i: u64, pad: usize| {
        Value::Map(vec![
            ("id".into(), i.into()),
            ("name".into(), "ada lovelace".into()),
            ("tags".into(), Value::Array(vec!["a".into(), "b".into()])),
            ("ok".into(), true.into()),
            ("score".into(), Value::F64(0.5)),
            ("note".into(), "x".repeat(pad).into()),
        ])
    };
    let encode = |v: &Value| {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap();
        out
    };
    // The padding of the last record that makes the whole `size` bytes.
    let padded = |value: &dyn Fn(usize) -> Value| {
        (0..size)
            .map(|pad| encode(&value(pad)))
            .find(|bytes| bytes.len() == size)
            .unwrap()
    };
    if size <= 64 {
        return padded(&|pad| record(1, pad));
    }
    // Records of 64 bytes, and a last one of what is left.
    let full = encode(&record(1, 0)).len();
    let n = size / 64 - 1;
    let records: Vec<Value> = (0..n as u64).map(|i| record(i, 64 - full)).collect();
    padded(&|pad| {
        let mut all = records.clone();
        all.push(record(0, pad));
        Value::Array(all)
    })
}

fn payloads(c: &mut Criterion) {
    let mut g = c.benchmark_group("payload");
    for size in [64, 1024] {
        let bytes = payload(size);
        zmanager::wire::payload::check(&bytes, 256).unwrap();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("check {size} B"), |b| {
            b.iter(|| zmanager::wire::payload::check(black_box(&bytes), 256))
        });
    }
    g.finish();
}

/// The journal writer's part of a request, as `zmanager bench --journal
/// on` makes it: accepted (with its payload), dispatched once, completed
/// with its result, committed in groups of [`GROUP`] requests. With
/// `sync = off` it is SQLite's CPU alone (rows, indexes, the log and its
/// checkpoints); `full` adds an fsync per commit, which is the disk's.
fn journal(c: &mut Criterion) {
    const GROUP: u64 = 64;
    let mut g = c.benchmark_group("journal");
    g.throughput(Throughput::Elements(GROUP));
    for (name, sync) in [("off", SyncMode::Off), ("full", SyncMode::Full)] {
        let dir = std::env::temp_dir().join(format!(
            "zmanager-bench-journal-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let journal = SqliteJournal::open(&dir, sync).unwrap();
        let worker = Bytes::from_static(b"w0.0.12345.c1");
        let mut next = 0u64;
        g.bench_function(
            format!("a group of {GROUP} requests' events, sync = {name}"),
            |b| {
                b.iter_batched(
                    || {
                        let mut events = Vec::with_capacity(3 * GROUP as usize);
                        for _ in 0..GROUP {
                            next += 1;
                            let m = work(next);
                            let key = key_of(&m.envelope);
                            let mut result = m.clone();
                            result.envelope.kind = Kind::Result;
                            events.push(Event::accepted(now_us(), m));
                            events.push(Event::Dispatched {
                                at_us: now_us(),
                                key: key.clone(),
                                attempt: 1,
                                worker: worker.clone(),
                            });
                            events.push(Event::Completed {
                                at_us: now_us(),
                                key,
                                result: Some(result.into()),
                            });
                        }
                        events
                    },
                    |events| journal.append(&events).unwrap(),
                    BatchSize::LargeInput,
                )
            },
        );
        drop(journal);
        let _ = std::fs::remove_dir_all(&dir);
    }
    g.finish();
}

criterion_group!(benches, action_keys, envelopes, subject, payloads, journal);
criterion_main!(benches);
