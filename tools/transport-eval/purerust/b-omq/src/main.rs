// omq-tokio 0.33 evaluation programs. Modes: see usage().
use bytes::Bytes;
use omq_tokio::{
    CurveKeypair, CurvePublicKey, CurveSecretKey, CurveServerOptions, Message, MonitorEvent,
    Options, PeerPublicKey, Socket, SocketType,
};
use std::time::{Duration, Instant};

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("env {k} missing"))
}
fn kp(secret_var: &str) -> CurveKeypair {
    let secret = CurveSecretKey::from_z85(&env(secret_var)).expect("z85 secret");
    let public = secret.derive_public();
    CurveKeypair { public, secret }
}
fn server_opts(allowed: Vec<String>) -> Options {
    let allowed: Vec<[u8; 32]> = allowed
        .iter()
        .map(|z| *CurvePublicKey::from_z85(z).expect("z85 pub").as_bytes())
        .collect();
    let so = CurveServerOptions::new().authenticator(move |peer| {
        let ok = allowed.is_empty() || allowed.contains(&peer.public_key);
        eprintln!(
            "[auth] client key {} from {:?} -> {}",
            CurvePublicKey::from_bytes(peer.public_key).to_z85(),
            peer.peer_address,
            if ok { "ALLOW" } else { "DENY" }
        );
        ok
    });
    base_opts().curve_server_with_options(kp("SERVER_SECRET"), so)
}
fn client_opts() -> Options {
    let server = CurvePublicKey::from_z85(&env("SERVER_PUBLIC")).unwrap();
    base_opts().curve_client(kp("CLIENT_SECRET"), server)
}
fn base_opts() -> Options {
    Options::default()
        .max_message_size(1 << 20)
        .handshake_timeout(Duration::from_secs(3))
}
fn spawn_monitor(s: &Socket) {
    let mut m = s.monitor();
    tokio::spawn(async move {
        while let Ok(ev) = m.recv().await {
            match ev {
                MonitorEvent::HandshakeSucceeded { peer, .. } => {
                    let k = match peer.authentication.public_key {
                        Some(PeerPublicKey::Curve(k)) => CurvePublicKey::from_bytes(k).to_z85(),
                        _ => "-".into(),
                    };
                    eprintln!("[mon] handshake ok conn={} key={k}", peer.connection_id)
                }
                other => eprintln!("[mon] {other:?}"),
            }
        }
    });
}
fn key_of(p: &omq_tokio::PeerInfo) -> String {
    match p.authentication.public_key {
        Some(PeerPublicKey::Curve(k)) => CurvePublicKey::from_bytes(k).to_z85(),
        _ => "-".into(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let mode = a.get(1).map(String::as_str).unwrap_or("");
    let ep = |p: &str| format!("tcp://127.0.0.1:{p}");
    let allowed = || -> Vec<String> {
        a.get(3).map(|s| s.split(',').map(String::from).collect()).unwrap_or_default()
    };
    match mode {
        // curve-pull PORT [ALLOWED_Z85,...]
        "curve-pull" | "null-pull" => {
            let o = if mode == "curve-pull" { server_opts(allowed()) } else { base_opts() };
            let s = Socket::new(SocketType::Pull, o);
            spawn_monitor(&s);
            s.bind(ep(&a[2]).as_str()).await?;
            println!("READY");
            loop {
                let m = s.recv().await?;
                println!("[recv] {} bytes: {:?}", m.byte_len(), String::from_utf8_lossy(m.part_slice(0).unwrap_or(b"")));
            }
        }
        "curve-router" => {
            let s = Socket::new(SocketType::Router, server_opts(allowed()));
            s.bind(ep(&a[2]).as_str()).await?;
            let s = s.identity_routing()?;
            println!("READY");
            loop {
                let (id, m) = s.recv_from().await?;
                println!("[router] from key={} id={:?}: {:?}", key_of(id.peer_info()), id.to_bytes(), String::from_utf8_lossy(m.part_slice(0).unwrap_or(b"")));
                s.send_to(id, m).await?;
            }
        }
        "curve-pub" => {
            let s = Socket::new(SocketType::Pub, server_opts(allowed()));
            spawn_monitor(&s);
            s.bind(ep(&a[2]).as_str()).await?;
            println!("READY");
            for i in 0.. {
                s.send(Message::single(Bytes::from(format!("tick {i}")))).await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // bench-pull PORT N curve|null
        "bench-pull" => {
            let n: u64 = a[3].parse()?;
            let o = if a[4] == "curve" { server_opts(vec![]) } else { base_opts() }.recv_hwm(1000);
            let s = Socket::new(SocketType::Pull, o);
            s.bind(ep(&a[2]).as_str()).await?;
            let _ = s.recv().await?;
            let t = Instant::now();
            for _ in 1..n {
                let _ = s.recv().await?;
            }
            let dt = t.elapsed().as_secs_f64();
            println!("RATE {:.0}", (n - 1) as f64 / dt);
        }
        // bench-push PORT N curve|null
        "bench-push" => {
            let n: u64 = a[3].parse()?;
            let o = if a[4] == "curve" { client_opts() } else { base_opts() }
                .send_hwm(1000)
                .linger_forever();
            let s = Socket::new(SocketType::Push, o);
            s.connect(ep(&a[2]).as_str()).await?;
            let payload = Bytes::from(vec![7u8; 64]);
            for _ in 0..n {
                s.send(Message::single(payload.clone())).await?;
            }
            s.close().await?;
        }
        // bench-router PORT N(total round trips) curve|null
        "bench-router" => {
            let n: u64 = a[3].parse()?;
            let o = if a[4] == "curve" { server_opts(vec![]) } else { base_opts() };
            let s = Socket::new(SocketType::Router, o);
            s.bind(ep(&a[2]).as_str()).await?;
            let s = s.identity_routing()?;
            let mut ids = vec![];
            while ids.len() < 2 {
                let (id, _m) = s.recv_from().await?;
                ids.push(id.to_bytes());
            }
            let payload = Bytes::from(vec![7u8; 64]);
            let t = Instant::now();
            let mut sent = 0u64;
            for id in &ids {
                for _ in 0..64 {
                    s.send_to(id, Message::single(payload.clone())).await?;
                    sent += 1;
                }
            }
            let mut got = 0u64;
            while got < n {
                let (id, m) = s.recv_from().await?;
                got += 1;
                if sent < n {
                    s.send_to(id, m).await?;
                    sent += 1;
                }
            }
            println!("RATE {:.0}", n as f64 / t.elapsed().as_secs_f64());
            for id in &ids {
                s.send_to(id, Message::single(Bytes::from_static(b"STOP"))).await?;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // bench-dealers PORT curve|null : two DEALER echo workers
        "bench-dealers" => {
            let mut hs = vec![];
            for w in 0..2 {
                let o = if a[3] == "curve" { client_opts() } else { base_opts() }
                    .identity(Bytes::from(format!("w{w}")));
                let s = Socket::new(SocketType::Dealer, o);
                s.connect(ep(&a[2]).as_str()).await?;
                hs.push(tokio::spawn(async move {
                    s.send(Message::single(Bytes::from_static(b"hello"))).await.unwrap();
                    loop {
                        let m = s.recv().await.unwrap();
                        if m.part_slice(0) == Some(b"STOP") {
                            break;
                        }
                        s.send(m).await.unwrap();
                    }
                }));
            }
            for h in hs {
                h.await?;
            }
        }
        // push-loop PORT : one message per 100 ms for 6 s, prints send errors
        "push-loop" => {
            let s = Socket::new(SocketType::Push, base_opts().send_hwm(1000));
            s.connect(ep(&a[2]).as_str()).await?;
            for i in 0..60 {
                if let Err(e) = s.send(Message::single(Bytes::from(format!("n{i}")))).await { eprintln!("send err {e}"); }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // cancel-test PORT: 20000 msgs; receiver wraps every recv in a 1 us timeout (cancelled recvs)
        "cancel-test" => {
            let r = Socket::new(SocketType::Pull, base_opts());
            r.bind(ep(&a[2]).as_str()).await?;
            let t = Socket::new(SocketType::Push, base_opts().linger_forever());
            t.connect(ep(&a[2]).as_str()).await?;
            tokio::spawn(async move { for i in 0..20000u32 { t.send(Message::single(Bytes::from(i.to_be_bytes().to_vec()))).await.unwrap(); if i % 10 == 0 { tokio::time::sleep(Duration::from_millis(1)).await } } t.close().await.unwrap(); });
            let (mut got, mut cancelled, mut next) = (0u32, 0u64, 0u32);
            let mut order_ok = true;
            let end = Instant::now() + Duration::from_secs(5);
            while got < 20000 && Instant::now() < end {
                match tokio::time::timeout(Duration::from_micros(1), r.recv()).await {
                    Ok(m) => { let m = m?; let v = u32::from_be_bytes(m.part_slice(0).unwrap().try_into().unwrap()); if v != next { order_ok = false } next = v + 1; got += 1 }
                    Err(_) => cancelled += 1,
                }
            }
            println!("received {got}/20000, cancelled recv futures {cancelled}, in order without gaps: {order_ok}");
        }
        // hwm-test: PUSH with send_hwm 10 connected to a port nobody listens on
        "hwm-test" => {
            let s = Socket::new(SocketType::Push, base_opts().send_hwm(10));
            s.connect("tcp://127.0.0.1:9").await?;
            let mut ok = 0;
            for i in 0..50 {
                match tokio::time::timeout(Duration::from_millis(200), s.send(Message::single(Bytes::from(format!("n{i}"))))).await {
                    Ok(Ok(())) => ok += 1,
                    Ok(Err(e)) => { println!("send {i} error: {e}"); break }
                    Err(_) => { println!("send {i} blocked (timed out after 200 ms)"); break }
                }
            }
            println!("sends completed with no peer: {ok}");
        }
        _ => eprintln!("usage: curve-pull|null-pull|curve-router|curve-pub PORT [ALLOWED]; bench-pull|bench-push PORT N curve|null; bench-router PORT N mech; bench-dealers PORT mech"),
    }
    Ok(())
}
