#!/usr/bin/env python3
"""Writes the seed corpus, fuzz/corpus/<target>/, from scratch.

A few valid inputs per target, in each target's input layout (see the
comment at the top of each fuzz_targets/*.rs and `Input` in src/lib.rs):
real configuration files of the repository, and envelopes in the form the
node writes them (MessagePack maps with field names, encoded here by a
small encoder of the few types an envelope holds). Run it from anywhere:
`python3 fuzz/make_corpus.py`. libFuzzer finds the rest.
"""

import pathlib
import shutil
import struct

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"


# --- MessagePack, the smallest forms (as rmp writes them) ------------------

def mp(v):
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 0x80:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack(">b", v)
        if 0 <= v <= 0xFF:
            return b"\xcc" + bytes([v])
        if 0 <= v <= 0xFFFF:
            return b"\xcd" + struct.pack(">H", v)
        if 0 <= v <= 0xFFFFFFFF:
            return b"\xce" + struct.pack(">I", v)
        if v >= 0:
            return b"\xcf" + struct.pack(">Q", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        n = len(b)
        if n < 32:
            return bytes([0xA0 | n]) + b
        if n <= 0xFF:
            return b"\xd9" + bytes([n]) + b
        return b"\xda" + struct.pack(">H", n) + b
    if isinstance(v, bytes):
        return b"\xc4" + bytes([len(v)]) + v
    if isinstance(v, list):
        n = len(v)
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)
        return head + b"".join(mp(x) for x in v)
    if isinstance(v, dict):
        n = len(v)
        head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
        return head + b"".join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(v)


def envelope(id, flow="Greeting", service="svc", **extra):
    """An envelope with every field, in the node's order."""
    e = {
        "v": 1,
        "kind": "request",
        "id": id,
        "flow": flow,
        "step": 0,
        "key": "",
        "service": service,
        "reply_to": "",
        "attempt": 0,
        "created_us": 1_700_000_000_000_000,
        "accepted_us": 0,
    }
    for k in ("origin", "ack", "order_key", "operator", "traceparent", "tracestate"):
        if k in extra:
            e[k] = extra.pop(k)
    e["status"] = extra.pop("status", "ok")
    if "error" in extra:
        e["error"] = extra.pop("error")
    e.update(extra)
    return mp(e)


# --- the layouts of src/lib.rs's Input ---------------------------------------

def chunk(b):
    n = len(b)
    if n < 0x80:
        return bytes([n]) + b
    assert n < 0x8000
    return bytes([0x80 | n >> 8, n & 0xFF]) + b


def frames(*fs):
    """wire_frames: count, then each frame but the last as a chunk."""
    return bytes([len(fs)]) + b"".join(chunk(f) for f in fs[:-1]) + fs[-1]


ROW_KINDS = ["accepted", "dispatched", "suspended", "resumed", "completed",
             "dead_lettered", "bogus"]


def row(kind, at, service, id, flow="", attempt=None, worker=None, step=None,
        reason=None, env=None, payload=None):
    """journal_rows: one row (see the target's comment for the flags)."""
    fields = [attempt, worker, step, reason, env, payload]
    flags = sum(1 << i for i, f in enumerate(fields) if f is not None)
    out = bytes([flags, ROW_KINDS.index(kind), at])
    out += chunk(service.encode()) + chunk(id.encode()) + chunk(flow.encode())
    if attempt is not None:
        out += bytes([attempt])
    if worker is not None:
        out += chunk(worker)
    if step is not None:
        out += bytes([step])
    if reason is not None:
        out += chunk(reason.encode())
    if env is not None:
        out += chunk(env)
    if payload is not None:
        out += chunk(payload)
    return out


def rows(*rs, since=0, until=0xFE - 1, flow=b"", limit=10, state=0):
    return (bytes([len(rs)]) + b"".join(rs) + bytes([since, until])
            + chunk(flow) + bytes([limit, state]))


def name(path):
    """A seed's name from the repository file it copies."""
    return str(path.relative_to(ROOT)).replace("/", "_")


# --- the seeds ---------------------------------------------------------------

def seeds():
    payload = mp({"name": "  ada "})
    req = envelope("m1")
    full = envelope("m2", origin="svc2", ack=True, order_key="acct-1",
                    kind="result", step=3, key="?Greeting?greet",
                    reply_to="svc~reply", attempt=2, accepted_us=5)
    err = envelope("m3", kind="result", status="error",
                   error={"code": 7, "name": "action_failed", "message": "boom"})
    minimal = mp({"id": "m4"})
    unknown = mp({"id": "m5", "kind": "telepathy", "status": "maybe", "extra": [1, 2]})
    traced = envelope("m6", traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                      tracestate="congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")

    yield "envelope/request", req
    yield "envelope/every_field", full
    yield "envelope/error_result", err
    yield "envelope/minimal", minimal
    yield "envelope/unknown_kind_and_field", unknown
    yield "envelope/trace_context", traced

    yield "wire_frames/topic_message", frames(b"Greeting~~~~done", req, payload)
    yield "wire_frames/work_batch", frames(b"WORK", req, payload, full, mp([1, 2]))
    yield "wire_frames/result", frames(b"RESULT", err, b"\xc0")
    yield "wire_frames/ready", frames(b"READY", mp({"credits": 64, "pid": 7}))
    yield "wire_frames/heartbeat", frames(b"HEARTBEAT")

    for path in sorted((ROOT / "flows").glob("*.ini")) + sorted(
            (ROOT / "tests/config").glob("**/flows/*.ini")):
        yield f"flows_ini/{name(path)}", path.read_bytes()
    yield "flows_toml/echo.toml", (ROOT / "flows/echo.toml").read_bytes()
    yield "flows_toml/ordered.toml", (
        b'[flow.Transfer]\norder_by = "payload.account"\n'
        b'steps = ["?Transfer?Push", "?Transfer?debit", "Subject?Transfer@PUBLISH?sent", "??done"]\n'
        b'[flow."Wait.1"]\nsteps = ["?Wait?Push", "?Wait@ASYNC?answer", "??done"]\n')

    retry_ini = (b"[actionmapping]\n?Orders?charge = shop.Orders.charge\n"
                 b"[services]\n?Orders?ship = shipping\n"
                 b"[retry ?Orders?charge]\nmax_attempts = 5\ninitial_delay_ms = 100\n"
                 b"multiplier = 2\nmax_delay_ms = 5000\njitter = 0.2\n"
                 b"no_retry = bad_request, unknown_action\n")
    retry_toml = (b'[actionmapping]\n"?Orders?charge" = { component = "Orders", action = "charge" }\n'
                  b'[services]\n"?Orders?ship" = "shipping"\n'
                  b'[retry."?Orders?charge"]\nmax_attempts = 5\ninitial_delay_ms = 100\n'
                  b'multiplier = 2.0\nmax_delay_ms = 5000\njitter = 0.2\n'
                  b'no_retry = ["bad_request", "unknown_action"]\n')
    for path in sorted((ROOT / "action_mappings").glob("*")) + sorted(
            (ROOT / "tests/config").glob("**/mappings/*")):
        fmt = b"\x01" if path.suffix == ".toml" else b"\x00"
        yield f"mappings/{name(path)}", fmt + path.read_bytes()
    yield "mappings/retry.ini", b"\x00" + retry_ini
    yield "mappings/retry.toml", b"\x01" + retry_toml

    def catalog(formats, *texts):
        return bytes([formats]) + b"\x00".join(texts)

    read = lambda p: (ROOT / p).read_bytes()
    yield "catalog/greeting", catalog(0b0010, read("flows/greeting.ini"),
                                      read("action_mappings/greeter.toml"),
                                      read("flows/announce.ini"),
                                      read("action_mappings/text.ini"))
    yield "catalog/echo", catalog(0b0011, read("flows/echo.toml"),
                                  read("action_mappings/greeter.toml"))
    yield "catalog/probe", catalog(0b0000, read("tests/config/flows/probe.ini"),
                                   read("tests/config/mappings/probe.ini"))
    yield "catalog/retry_and_services", catalog(
        0b0000, b"[Orders]\n?Orders?Push\n?Orders?charge\n?Orders?ship\n??done\n", retry_ini)

    accepted = envelope("m1", service="svc")
    state = envelope("m1", service="svc", step=2, key="?Greeting?greet")
    result = envelope("m1", service="svc", kind="result", step=4, key="??done")
    yield "journal_rows/completed", rows(
        row("accepted", 1, "svc", "m1", "Greeting", env=accepted, payload=payload),
        row("dispatched", 2, "svc", "m1", attempt=1, worker=b"\x00\x01\x02\x03"),
        row("completed", 3, "svc", "m1", env=result, payload=payload))
    yield "journal_rows/suspended_and_resumed", rows(
        row("accepted", 1, "svc", "m1", "Greeting", env=accepted, payload=payload),
        row("suspended", 2, "svc", "m1", "Greeting", step=2, env=state, payload=payload),
        row("resumed", 3, "svc", "m1", "Greeting", step=2, env=state, payload=payload),
        row("dispatched", 4, "svc", "m1", attempt=2, worker=b"w"), state=1)
    yield "journal_rows/dead_lettered", rows(
        row("accepted", 1, "svc", "m1", "Greeting", env=accepted, payload=payload),
        row("dead_lettered", 9, "svc", "m1", reason="max attempts"),
        row("accepted", 10, "svc", "m2", "Greeting", env=envelope("m2"), payload=payload),
        flow=b"Greeting", state=6)

    yield "payload/map", b"\xff" + payload
    yield "payload/every_kind", b"\xff" + mp(
        [None, True, False, 0, -1, 300, 70000, 2**40, -(2**40), 1.5, "s", b"\x00", {"a": {"b": 1}}])
    yield "payload/order_key", b"\xff" + mp({"k": "acct", "a": {"b": 42}})
    yield "payload/ext_and_deep", b"\x05" + b"\xd4\x01\x02" + b"\x91" * 5 + b"\xc0"


def main():
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    for name, data in seeds():
        path = CORPUS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    print(f"wrote {sum(1 for _ in CORPUS.rglob('*') if _.is_file())} seeds, {total} bytes")


if __name__ == "__main__":
    main()
