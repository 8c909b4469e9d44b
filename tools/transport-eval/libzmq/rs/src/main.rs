//! Evaluation programs for "libzmq via the `zmq` crate, driven from tokio" vs zmq.rs 0.7.
//! One binary, subcommands; see ../REPORT.md for how each is run.
mod az;

use az::AZ;
use bytes::Bytes;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use zeromq::{Socket as _, SocketRecv as _, SocketSend as _};

fn arg(a: &[String], i: usize) -> &str {
    a.get(i).map(|s| s.as_str()).unwrap_or_else(|| panic!("missing argument {i}"))
}
fn opt(a: &[String], i: usize) -> Option<&str> {
    a.get(i).map(|s| s.as_str()).filter(|s| !s.is_empty() && *s != "-")
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// ZAP handler (RFC 27) on inproc://zeromq.zap.01: accepts CURVE clients whose public key
/// is in `allowed` (z85 -> service id); sets User-Id = client key (z85) and adds metadata
/// property X-Service-Id. Everything else gets 400.
fn spawn_zap(ctx: &zmq::Context, allowed: HashMap<String, String>) {
    let zap = ctx.socket(zmq::REP).unwrap();
    zap.bind("inproc://zeromq.zap.01").unwrap();
    std::thread::spawn(move || loop {
        let req = match zap.recv_multipart(0) {
            Ok(r) => r,
            Err(_) => return,
        };
        // version, request_id, domain, address, routing_id, mechanism, credentials...
        let mech = String::from_utf8_lossy(&req[5]).to_string();
        let addr = String::from_utf8_lossy(&req[3]).to_string();
        let (status, text, user, meta) = if mech == "CURVE" && req.len() >= 7 && req[6].len() == 32 {
            let key = zmq::z85_encode(&req[6]).unwrap();
            match allowed.get(&key) {
                Some(svc) => {
                    // ZMTP metadata encoding: name-len(1) name value-len(4, BE) value
                    let mut m = Vec::new();
                    let name = b"X-Service-Id";
                    m.push(name.len() as u8);
                    m.extend_from_slice(name);
                    m.extend_from_slice(&(svc.len() as u32).to_be_bytes());
                    m.extend_from_slice(svc.as_bytes());
                    eprintln!("ZAP: ALLOW key={key} from {addr} -> service {svc}");
                    ("200", "OK", key, m)
                }
                None => {
                    eprintln!("ZAP: DENY  key={key} from {addr} (not in allow list)");
                    ("400", "unknown key", String::new(), Vec::new())
                }
            }
        } else {
            eprintln!("ZAP: DENY mechanism {mech}");
            ("400", "CURVE required", String::new(), Vec::new())
        };
        let reply: Vec<Vec<u8>> = vec![
            b"1.0".to_vec(),
            req[1].clone(),
            status.as_bytes().to_vec(),
            text.as_bytes().to_vec(),
            user.into_bytes(),
            meta,
        ];
        zap.send_multipart(reply, 0).unwrap();
    });
}

/// Socket monitor printed to stderr (events only, on a thread).
fn spawn_monitor(ctx: &zmq::Context, sock: &zmq::Socket, name: &'static str, counts: std::sync::Arc<std::sync::Mutex<HashMap<String, u64>>>, verbose: bool) {
    let ep = format!("inproc://mon-{name}");
    sock.monitor(&ep, zmq::SocketEvent::ALL as i32).unwrap();
    let m = ctx.socket(zmq::PAIR).unwrap();
    m.connect(&ep).unwrap();
    std::thread::spawn(move || loop {
        let parts = match m.recv_multipart(0) {
            Ok(p) => p,
            Err(_) => return,
        };
        let ev = u16::from_le_bytes([parts[0][0], parts[0][1]]);
        let val = u32::from_le_bytes([parts[0][2], parts[0][3], parts[0][4], parts[0][5]]);
        let evname = format!("{:?}", zmq::SocketEvent::from_raw(ev));
        let full = if evname.starts_with("HANDSHAKE_FAILED") { format!("{evname}(errno/code {val})") } else { evname.clone() };
        *counts.lock().unwrap().entry(full.clone()).or_default() += 1;
        if verbose {
            eprintln!("monitor[{name}]: {full} {}", String::from_utf8_lossy(&parts[1]));
        }
    });
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    match arg(&a, 1) {
        "version" => {
            let (x, y, z) = zmq::version();
            println!("libzmq {x}.{y}.{z} curve={} ipc={}", zmq::has("curve").unwrap_or(false), zmq::has("ipc").unwrap_or(false));
        }
        "keygen" => {
            let kp = zmq::CurveKeyPair::new().expect("CURVE not available in this libzmq");
            println!("{} {}", zmq::z85_encode(&kp.public_key).unwrap(), zmq::z85_encode(&kp.secret_key).unwrap());
        }
        // curve-server PATTERN ENDPOINT SERVER_SECRET ALLOWFILE N TIMEOUT_S
        "curve-server" => curve_server(&a).await,
        // guard-server ENDPOINT MAXMSGSIZE HANDSHAKE_IVL_MS DURATION_S [CURVE_SECRET]
        "guard-server" => guard_server(&a).await,
        "lz-pull" => lz_pull(&a).await,
        "lz-push" => lz_push(&a).await,
        "zr-pull" => zr_pull(&a).await,
        "zr-push" => zr_push(&a).await,
        "lz-router" => lz_router(&a).await,
        "lz-dealers" => lz_dealers(&a).await,
        "zr-router" => zr_router(&a).await,
        "zr-dealers" => zr_dealers(&a).await,
        "lz-hwm" => lz_hwm(&a).await,
        "zr-hwm" => zr_hwm(&a).await,
        "lz-seq-push" => lz_seq_push(&a).await,
        "lz-seq-pull" => lz_seq_pull(&a).await,
        "lz-linger" => lz_linger(&a),
        "lzb-pull" => lzb_pull(&a),
        "tq-pull" => tq_pull(&a).await,
        "tq-push" => tq_push(&a).await,
        "lzb-push" => lzb_push(&a),
        other => panic!("unknown subcommand {other}"),
    }
}

async fn curve_server(a: &[String]) {
    let pattern = arg(a, 2);
    let ep = arg(a, 3);
    let secret = zmq::z85_decode(arg(a, 4)).unwrap();
    let allowed: HashMap<String, String> = std::fs::read_to_string(arg(a, 5))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect();
    let n: usize = arg(a, 6).parse().unwrap();
    let timeout = Duration::from_secs(arg(a, 7).parse().unwrap());
    let ctx = zmq::Context::new();
    spawn_zap(&ctx, allowed);
    let kind = match pattern {
        "pull" => zmq::PULL,
        "sub" => zmq::SUB,
        "router" => zmq::ROUTER,
        _ => panic!("pattern"),
    };
    let s = ctx.socket(kind).unwrap();
    s.set_curve_server(true).unwrap();
    s.set_curve_secretkey(&secret).unwrap();
    s.set_zap_domain("zmanager").unwrap();
    s.set_maxmsgsize(1 << 20).unwrap();
    s.set_handshake_ivl(2000).unwrap();
    if kind == zmq::SUB {
        s.set_subscribe(b"").unwrap();
    }
    let counts = Default::default();
    spawn_monitor(&ctx, &s, "curve", counts, true);
    s.bind(ep).unwrap();
    println!("READY {pattern} {ep}");
    let s = AZ::new(s).unwrap();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut got = 0;
    while got < n {
        let r = tokio::time::timeout_at(deadline, s.recv_multipart()).await;
        let mut parts = match r {
            Ok(p) => p.unwrap(),
            Err(_) => {
                println!("TIMEOUT after {got} messages");
                break;
            }
        };
        got += 1;
        let last = parts.len() - 1;
        let body = String::from_utf8_lossy(&parts[last]).to_string();
        let user = parts[last].gets("User-Id").map(|s| s.to_string());
        let svc = parts[last].gets("X-Service-Id").map(|s| s.to_string());
        let peer = parts[last].gets("Peer-Address").map(|s| s.to_string());
        println!("MSG {pattern} body={body:?} User-Id={user:?} X-Service-Id={svc:?} Peer-Address={peer:?}");
        if kind == zmq::ROUTER {
            let id = parts[0].to_vec();
            let reply = format!("echo:{body}");
            s.send_multipart(&[&id, reply.as_bytes()]).await.unwrap();
        }
    }
    println!("DONE received={got}");
    // the ZAP/monitor threads keep the context alive, so exiting now would skip zmq_ctx_term's
    // linger flush; give the last reply time to leave.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn guard_server(a: &[String]) {
    let ep = arg(a, 2);
    let maxmsg: i64 = arg(a, 3).parse().unwrap();
    let hs: i32 = arg(a, 4).parse().unwrap();
    let dur = Duration::from_secs(arg(a, 5).parse().unwrap());
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::PULL).unwrap();
    s.set_maxmsgsize(maxmsg).unwrap();
    s.set_handshake_ivl(hs).unwrap();
    if let Some(sec) = opt(a, 6) {
        s.set_curve_server(true).unwrap();
        s.set_curve_secretkey(&zmq::z85_decode(sec).unwrap()).unwrap();
    }
    let counts: std::sync::Arc<std::sync::Mutex<HashMap<String, u64>>> = Default::default();
    spawn_monitor(&ctx, &s, "guard", counts.clone(), std::env::var("VERBOSE").is_ok());
    s.bind(ep).unwrap();
    println!("READY guard {ep} maxmsgsize={maxmsg} handshake_ivl={hs}ms curve={}", opt(a, 6).is_some());
    let s = AZ::new(s).unwrap();
    let deadline = tokio::time::Instant::now() + dur;
    let t0 = Instant::now();
    let mut last_report = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_millis(500), s.recv_msg()).await {
            Ok(Ok(m)) => println!("MSG at {:.2}s len={} body={:?}", t0.elapsed().as_secs_f64(), m.len(), String::from_utf8_lossy(&m[..m.len().min(40)])),
            Ok(Err(e)) => println!("recv error {e}"),
            Err(_) => {}
        }
        if last_report.elapsed() > Duration::from_secs(1) {
            last_report = Instant::now();
            let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
            println!("STAT t={:.1}s open_fds={fds} rss_kib={} events={:?}", t0.elapsed().as_secs_f64(), rss_kib(), counts.lock().unwrap());
        }
        if tokio::time::Instant::now() > deadline {
            break;
        }
    }
    println!("ALIVE at end, rss_kib={}", rss_kib());
}

fn lz_curve_client(s: &zmq::Socket, server_pub: Option<&str>) {
    if let Some(sp) = server_pub {
        let kp = zmq::CurveKeyPair::new().unwrap();
        s.set_curve_serverkey(&zmq::z85_decode(sp).unwrap()).unwrap();
        s.set_curve_publickey(&kp.public_key).unwrap();
        s.set_curve_secretkey(&kp.secret_key).unwrap();
    }
}

// lz-pull ENDPOINT N [CURVE_SECRET]
async fn lz_pull(a: &[String]) {
    let n: usize = arg(a, 3).parse().unwrap();
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::PULL).unwrap();
    if let Some(sec) = opt(a, 4) {
        s.set_curve_server(true).unwrap();
        s.set_curve_secretkey(&zmq::z85_decode(sec).unwrap()).unwrap();
    }
    s.set_maxmsgsize(1 << 20).unwrap();
    s.bind(arg(a, 2)).unwrap();
    let s = AZ::new(s).unwrap();
    let m = s.recv_msg().await.unwrap();
    let t0 = Instant::now();
    let size = m.len();
    for _ in 1..n {
        let m = tokio::time::timeout(Duration::from_secs(10), s.recv_msg()).await.expect("stalled").unwrap();
        debug_assert_eq!(m.len(), size);
    }
    let dt = t0.elapsed().as_secs_f64();
    println!("RESULT libzmq-pull curve={} n={n} size={size} secs={dt:.3} msgs_per_s={:.0}", opt(a, 4).is_some(), (n - 1) as f64 / dt);
}

// lz-push ENDPOINT N SIZE [SERVER_PUB]
async fn lz_push(a: &[String]) {
    let n: usize = arg(a, 3).parse().unwrap();
    let size: usize = arg(a, 4).parse().unwrap();
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::PUSH).unwrap();
    lz_curve_client(&s, opt(a, 5));
    s.connect(arg(a, 2)).unwrap();
    let s = AZ::new(s).unwrap();
    let payload = vec![7u8; size];
    for _ in 0..n {
        s.send(&payload).await.unwrap();
    }
    // default linger (-1): dropping the context waits until everything is delivered
}

async fn zr_pull(a: &[String]) {
    let n: usize = arg(a, 3).parse().unwrap();
    let mut s = zeromq::PullSocket::new();
    s.bind(arg(a, 2)).await.unwrap();
    let m = s.recv().await.unwrap();
    let size = m.get(0).unwrap().len();
    let t0 = Instant::now();
    for _ in 1..n {
        tokio::time::timeout(Duration::from_secs(10), s.recv()).await.expect("stalled").unwrap();
    }
    let dt = t0.elapsed().as_secs_f64();
    println!("RESULT zmqrs-pull n={n} size={size} secs={dt:.3} msgs_per_s={:.0}", (n - 1) as f64 / dt);
}

async fn zr_push(a: &[String]) {
    let n: usize = arg(a, 3).parse().unwrap();
    let size: usize = arg(a, 4).parse().unwrap();
    let mut s = zeromq::PushSocket::new();
    s.connect(arg(a, 2)).await.unwrap();
    let payload = Bytes::from(vec![7u8; size]);
    for _ in 0..n {
        s.send(zeromq::ZmqMessage::from(payload.clone())).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}

// lz-router ENDPOINT N WINDOW [CURVE_SECRET] : ROUTER bound, 2 DEALER workers echo
async fn lz_router(a: &[String]) {
    let n: usize = arg(a, 3).parse().unwrap();
    let window: usize = arg(a, 4).parse().unwrap();
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::ROUTER).unwrap();
    if let Some(sec) = opt(a, 5) {
        s.set_curve_server(true).unwrap();
        s.set_curve_secretkey(&zmq::z85_decode(sec).unwrap()).unwrap();
    }
    s.set_router_mandatory(true).unwrap();
    s.bind(arg(a, 2)).unwrap();
    let s = AZ::new(s).unwrap();
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let p = s.recv_multipart().await.unwrap();
        ids.push(p[0].to_vec());
    }
    let payload = [5u8; 64];
    let t0 = Instant::now();
    let mut sent = 0;
    for _ in 0..window {
        for id in &ids {
            s.send_multipart(&[id, &payload]).await.unwrap();
            sent += 1;
        }
    }
    let mut done = 0;
    while done < n {
        let p = tokio::time::timeout(Duration::from_secs(10), s.recv_multipart()).await.expect("stalled").unwrap();
        done += 1;
        if sent < n {
            s.send_multipart(&[&p[0], &payload]).await.unwrap();
            sent += 1;
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    for id in &ids {
        s.send_multipart(&[id, b"END"]).await.unwrap();
    }
    println!("RESULT libzmq-router-echo curve={} n={n} window={window}x2 secs={dt:.3} roundtrips_per_s={:.0}", opt(a, 5).is_some(), n as f64 / dt);
}

// lz-dealers ENDPOINT COUNT [SERVER_PUB]
async fn lz_dealers(a: &[String]) {
    let count: usize = arg(a, 3).parse().unwrap();
    let ctx = zmq::Context::new();
    let mut tasks = Vec::new();
    for _ in 0..count {
        let s = ctx.socket(zmq::DEALER).unwrap();
        lz_curve_client(&s, opt(a, 4));
        s.connect(arg(a, 2)).unwrap();
        let s = AZ::new(s).unwrap();
        // current_thread runtime: local tasks (zmq::Socket is Send but we keep it simple)
        tasks.push(async move {
            s.send(b"hello").await.unwrap();
            loop {
                let m = s.recv_msg().await.unwrap();
                if &m[..] == b"END" {
                    break;
                }
                s.send(&m).await.unwrap();
            }
        });
    }
    // zmq::Socket is !Sync, so these futures are !Send: run them as local tasks
    let local = tokio::task::LocalSet::new();
    let hs: Vec<_> = tasks.into_iter().map(|t| local.spawn_local(t)).collect();
    local.run_until(async move { for h in hs { h.await.unwrap(); } }).await;
}

async fn zr_router(a: &[String]) {
    let n: usize = arg(a, 3).parse().unwrap();
    let window: usize = arg(a, 4).parse().unwrap();
    let mut s = zeromq::RouterSocket::new();
    s.bind(arg(a, 2)).await.unwrap();
    let mut ids: Vec<Bytes> = Vec::new();
    while ids.len() < 2 {
        let m = s.recv().await.unwrap();
        ids.push(m.get(0).unwrap().clone());
    }
    let payload = Bytes::from(vec![5u8; 64]);
    let mk = |id: &Bytes, p: &Bytes| zeromq::ZmqMessage::try_from(vec![id.clone(), p.clone()]).unwrap();
    let t0 = Instant::now();
    let mut sent = 0;
    for _ in 0..window {
        for id in &ids {
            s.send(mk(id, &payload)).await.unwrap();
            sent += 1;
        }
    }
    let mut done = 0;
    while done < n {
        let m = tokio::time::timeout(Duration::from_secs(10), s.recv()).await.expect("stalled").unwrap();
        done += 1;
        if sent < n {
            s.send(mk(m.get(0).unwrap(), &payload)).await.unwrap();
            sent += 1;
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    for id in &ids {
        s.send(mk(id, &Bytes::from_static(b"END"))).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("RESULT zmqrs-router-echo n={n} window={window}x2 secs={dt:.3} roundtrips_per_s={:.0}", n as f64 / dt);
}

async fn zr_dealers(a: &[String]) {
    let count: usize = arg(a, 3).parse().unwrap();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..count {
        let ep = arg(a, 2).to_string();
        set.spawn(async move {
            let mut s = zeromq::DealerSocket::new();
            s.connect(&ep).await.unwrap();
            s.send("hello".into()).await.unwrap();
            loop {
                let m = s.recv().await.unwrap();
                if m.get(0).map(|b| &b[..]) == Some(b"END") {
                    break;
                }
                s.send(m).await.unwrap();
            }
        });
    }
    while set.join_next().await.is_some() {}
}

// lz-hwm SNDHWM : PUSH connected to a port nobody listens on; how many DONTWAIT sends queue
async fn lz_hwm(a: &[String]) {
    let hwm: i32 = arg(a, 2).parse().unwrap();
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::PUSH).unwrap();
    s.set_sndhwm(hwm).unwrap();
    s.set_linger(0).unwrap();
    for immediate in [false, true] {
        let s = ctx.socket(zmq::PUSH).unwrap();
        s.set_sndhwm(hwm).unwrap();
        s.set_linger(0).unwrap();
        s.set_immediate(immediate).unwrap();
        s.connect("tcp://127.0.0.1:5999").unwrap();
        let mut ok = 0;
        loop {
            match s.send(&b"x"[..], zmq::DONTWAIT) {
                Ok(()) => ok += 1,
                Err(e) => {
                    println!("libzmq PUSH sndhwm={hwm} immediate={immediate}: {ok} sends queued with no peer, then {e:?}");
                    break;
                }
            }
            if ok > 10 * hwm as usize + 10 {
                println!("no limit?");
                break;
            }
        }
        // the async adapter waits (does not spin) at HWM:
        let az = AZ::new(s).unwrap();
        let r = tokio::time::timeout(Duration::from_millis(300), az.send(b"y")).await;
        println!("  async send at HWM: {}", if r.is_err() { "pending (awaits, as expected)" } else { "completed" });
    }
}

async fn zr_hwm(_a: &[String]) {
    let mut s = zeromq::PushSocket::new();
    let r = tokio::time::timeout(Duration::from_millis(500), s.connect("tcp://127.0.0.1:5999")).await;
    println!("zmq.rs PUSH connect to closed port: {:?}", r.map(|x| x.map_err(|e| e.to_string())));
    let mut ok = 0;
    loop {
        match tokio::time::timeout(Duration::from_millis(300), s.send("x".into())).await {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => {
                println!("zmq.rs send error after {ok}: {e}");
                break;
            }
            Err(_) => {
                println!("zmq.rs PUSH with no peer: {ok} sends completed, then send blocks");
                break;
            }
        }
        if ok > 100000 {
            println!("zmq.rs: >100000 sends completed with no peer");
            break;
        }
    }
}

// lz-seq-push ENDPOINT COUNT INTERVAL_MS : sends seq numbers; used for reconnect test
async fn lz_seq_push(a: &[String]) {
    let count: u32 = arg(a, 3).parse().unwrap();
    let iv: u64 = arg(a, 4).parse().unwrap();
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::PUSH).unwrap();
    s.set_reconnect_ivl(100).unwrap();
    s.set_linger(1000).unwrap();
    s.connect(arg(a, 2)).unwrap();
    let s = AZ::new(s).unwrap();
    for i in 0..count {
        s.send(i.to_string().as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(iv)).await;
    }
    println!("PUSH sent {count}");
}

// lz-seq-pull ENDPOINT SECONDS
async fn lz_seq_pull(a: &[String]) {
    let secs: u64 = arg(a, 3).parse().unwrap();
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::PULL).unwrap();
    s.bind(arg(a, 2)).unwrap();
    let s = AZ::new(s).unwrap();
    let mut seqs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while let Ok(Ok(m)) = tokio::time::timeout_at(deadline, s.recv_msg()).await {
        seqs.push(String::from_utf8_lossy(&m).parse::<u32>().unwrap());
    }
    println!("PULL got {} msgs, first={:?} last={:?}", seqs.len(), seqs.first(), seqs.last());
}

// lz-linger LINGER_MS : queue messages for an absent peer, then drop socket+context; time it
fn lz_linger(a: &[String]) {
    let linger: i32 = arg(a, 2).parse().unwrap();
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::PUSH).unwrap();
    s.set_linger(linger).unwrap();
    s.connect("tcp://127.0.0.1:5998").unwrap();
    for _ in 0..10 {
        s.send(&b"pending"[..], zmq::DONTWAIT).unwrap();
    }
    let t = Instant::now();
    drop(s);
    drop(ctx);
    println!("linger={linger}: context terminated after {:.3}s", t.elapsed().as_secs_f64());
}

// Blocking (no tokio) baselines, to price the AsyncFd adapter: lzb-pull ENDPOINT N [SECRET]
fn lzb_pull(a: &[String]) {
    let n: usize = arg(a, 3).parse().unwrap();
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::PULL).unwrap();
    if let Some(sec) = opt(a, 4) {
        s.set_curve_server(true).unwrap();
        s.set_curve_secretkey(&zmq::z85_decode(sec).unwrap()).unwrap();
    }
    s.set_maxmsgsize(1 << 20).unwrap();
    s.set_rcvtimeo(10000).unwrap();
    s.bind(arg(a, 2)).unwrap();
    let mut m = zmq::Message::new();
    s.recv(&mut m, 0).unwrap();
    let t0 = Instant::now();
    for _ in 1..n {
        s.recv(&mut m, 0).expect("stalled");
    }
    let dt = t0.elapsed().as_secs_f64();
    println!("RESULT libzmq-blocking-pull curve={} n={n} size={} secs={dt:.3} msgs_per_s={:.0}", opt(a, 4).is_some(), m.len(), (n - 1) as f64 / dt);
}

fn lzb_push(a: &[String]) {
    let n: usize = arg(a, 3).parse().unwrap();
    let size: usize = arg(a, 4).parse().unwrap();
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::PUSH).unwrap();
    lz_curve_client(&s, opt(a, 5));
    s.connect(arg(a, 2)).unwrap();
    let payload = vec![7u8; size];
    for _ in 0..n {
        s.send(&payload[..], 0).unwrap();
    }
}

// tmq 0.5 (same libzmq through zmq 0.10; its own AsyncFd poller): tq-pull ENDPOINT N / tq-push ENDPOINT N SIZE
async fn tq_pull(a: &[String]) {
    use futures::StreamExt;
    let n: usize = arg(a, 3).parse().unwrap();
    let ctx = zmq::Context::new();
    let mut s = tmq::pull(&ctx).set_maxmsgsize(1 << 20).bind(arg(a, 2)).unwrap();
    let m = s.next().await.unwrap().unwrap();
    let size = m[0].len();
    let t0 = Instant::now();
    for _ in 1..n {
        tokio::time::timeout(Duration::from_secs(10), s.next()).await.expect("stalled").unwrap().unwrap();
    }
    let dt = t0.elapsed().as_secs_f64();
    println!("RESULT tmq-pull n={n} size={size} secs={dt:.3} msgs_per_s={:.0}", (n - 1) as f64 / dt);
}

async fn tq_push(a: &[String]) {
    use futures::SinkExt;
    let n: usize = arg(a, 3).parse().unwrap();
    let size: usize = arg(a, 4).parse().unwrap();
    let ctx = zmq::Context::new();
    let mut s = tmq::push(&ctx).connect(arg(a, 2)).unwrap();
    let payload = vec![7u8; size];
    for _ in 0..n {
        s.feed(tmq::Multipart::from(vec![payload.as_slice()])).await.unwrap();
    }
    SinkExt::<tmq::Multipart>::flush(&mut s).await.unwrap();
}
