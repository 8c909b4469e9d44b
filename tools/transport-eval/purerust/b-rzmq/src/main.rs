// rzmq 0.5.28 evaluation programs. Same modes as b-omq.
use rzmq::socket::{
    CURVE_SECRET_KEY, CURVE_SERVER, CURVE_SERVER_KEY, HANDSHAKE_IVL, LINGER, MAXMSGSIZE, RCVHWM,
    ROUTING_ID, SNDHWM,
};
use rzmq::{Context, Msg, Socket, SocketType};
use std::time::{Duration, Instant};

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("env {k} missing"))
}
async fn base(s: &Socket) -> anyhow::Result<()> {
    s.set_option_raw(MAXMSGSIZE, &(1i64 << 20).to_ne_bytes()).await?;
    s.set_option_raw(HANDSHAKE_IVL, &3000i32.to_ne_bytes()).await?;
    Ok(())
}
async fn server(s: &Socket) -> anyhow::Result<()> {
    base(s).await?;
    s.set_option_raw(CURVE_SERVER, &1i32.to_ne_bytes()).await?;
    s.set_option_raw(CURVE_SECRET_KEY, env("SERVER_SECRET").as_bytes()).await?;
    Ok(())
}
async fn client(s: &Socket) -> anyhow::Result<()> {
    base(s).await?;
    s.set_option_raw(CURVE_SECRET_KEY, env("CLIENT_SECRET").as_bytes()).await?;
    s.set_option_raw(CURVE_SERVER_KEY, env("SERVER_PUBLIC").as_bytes()).await?;
    Ok(())
}
async fn spawn_monitor(s: &Socket) -> anyhow::Result<()> {
    let m = s.monitor_default().await?;
    tokio::spawn(async move {
        while let Ok(ev) = m.recv().await {
            eprintln!("[mon] {ev:?}");
        }
    });
    Ok(())
}
fn text(m: &Msg) -> String {
    String::from_utf8_lossy(m.data().unwrap_or(b"")).into_owned()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let mode = a.get(1).map(String::as_str).unwrap_or("");
    let ep = |p: &str| format!("tcp://127.0.0.1:{p}");
    let ctx = Context::new()?;
    match mode {
        "curve-pull" | "null-pull" => {
            let s = ctx.socket(SocketType::Pull)?;
            if mode == "curve-pull" { server(&s).await? } else { base(&s).await? }
            spawn_monitor(&s).await?;
            s.bind(&ep(&a[2])).await?;
            println!("READY");
            loop {
                let m = s.recv().await?;
                println!("[recv] {} bytes: {:?}", m.size(), text(&m));
            }
        }
        "curve-router" => {
            let s = ctx.socket(SocketType::Router)?;
            server(&s).await?;
            s.bind(&ep(&a[2])).await?;
            println!("READY");
            loop {
                let f = s.recv_multipart().await?;
                println!("[router] id={:?} frames={:?}", f[0].data(), f.iter().skip(1).map(text).collect::<Vec<_>>());
                s.send_multipart(f).await?;
            }
        }
        "curve-pub" => {
            let s = ctx.socket(SocketType::Pub)?;
            server(&s).await?;
            spawn_monitor(&s).await?;
            s.bind(&ep(&a[2])).await?;
            println!("READY");
            for i in 0.. {
                s.send(Msg::from_vec(format!("tick {i}").into_bytes())).await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        "bench-pull" => {
            let n: u64 = a[3].parse()?;
            let s = ctx.socket(SocketType::Pull)?;
            if a[4] == "curve" { server(&s).await? } else { base(&s).await? }
            s.set_option_raw(RCVHWM, &1000i32.to_ne_bytes()).await?;
            s.bind(&ep(&a[2])).await?;
            let _ = s.recv().await?;
            let t = Instant::now();
            for _ in 1..n {
                let _ = s.recv().await?;
            }
            println!("RATE {:.0}", (n - 1) as f64 / t.elapsed().as_secs_f64());
        }
        "bench-push" => {
            let n: u64 = a[3].parse()?;
            let s = ctx.socket(SocketType::Push)?;
            if a[4] == "curve" { client(&s).await? } else { base(&s).await? }
            s.set_option_raw(SNDHWM, &1000i32.to_ne_bytes()).await?;
            s.set_option_raw(LINGER, &(-1i32).to_ne_bytes()).await?;
            s.connect(&ep(&a[2])).await?;
            let payload = bytes::Bytes::from(vec![7u8; 64]);
            for _ in 0..n {
                s.send(Msg::from_bytes(payload.clone())).await?;
            }
            s.close().await?;
            ctx.term().await?;
        }
        "bench-router" => {
            let n: u64 = a[3].parse()?;
            let s = ctx.socket(SocketType::Router)?;
            if a[4] == "curve" { server(&s).await? } else { base(&s).await? }
            s.bind(&ep(&a[2])).await?;
            let mut ids = vec![];
            while ids.len() < 2 {
                let f = s.recv_multipart().await?;
                ids.push(f[0].data_bytes().unwrap());
            }
            let payload = bytes::Bytes::from(vec![7u8; 64]);
            let t = Instant::now();
            let mut sent = 0u64;
            for id in &ids {
                for _ in 0..64 {
                    s.send_multipart(vec![Msg::from_bytes(id.clone()), Msg::from_bytes(payload.clone())]).await?;
                    sent += 1;
                }
            }
            let mut got = 0u64;
            while got < n {
                let f = s.recv_multipart().await?;
                got += 1;
                if sent < n {
                    s.send_multipart(f).await?;
                    sent += 1;
                }
            }
            println!("RATE {:.0}", n as f64 / t.elapsed().as_secs_f64());
            for id in &ids {
                s.send_multipart(vec![Msg::from_bytes(id.clone()), Msg::from_static(b"STOP")]).await?;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        "bench-dealers" => {
            let mut hs = vec![];
            for w in 0..2 {
                let s = ctx.socket(SocketType::Dealer)?;
                if a[3] == "curve" { client(&s).await? } else { base(&s).await? }
                s.set_option_raw(ROUTING_ID, format!("w{w}").as_bytes()).await?;
                s.connect(&ep(&a[2])).await?;
                hs.push(tokio::spawn(async move {
                    s.send(Msg::from_static(b"hello")).await.unwrap();
                    loop {
                        let m = s.recv().await.unwrap();
                        if m.data() == Some(b"STOP") {
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
        "push-loop" => {
            let s = ctx.socket(SocketType::Push)?;
            base(&s).await?;
            s.connect(&ep(&a[2])).await?;
            for i in 0..60 {
                if let Err(e) = s.send(Msg::from_vec(format!("n{i}").into_bytes())).await { eprintln!("send err {e}"); }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        "cancel-test" => {
            let r = ctx.socket(SocketType::Pull)?;
            base(&r).await?;
            r.bind(&ep(&a[2])).await?;
            let t = ctx.socket(SocketType::Push)?;
            base(&t).await?;
            t.connect(&ep(&a[2])).await?;
            tokio::spawn(async move { for i in 0..20000u32 { t.send(Msg::from_vec(i.to_be_bytes().to_vec())).await.unwrap(); if i % 10 == 0 { tokio::time::sleep(Duration::from_millis(1)).await } } });
            let (mut got, mut cancelled, mut next) = (0u32, 0u64, 0u32);
            let mut order_ok = true;
            let end = Instant::now() + Duration::from_secs(5);
            while got < 20000 && Instant::now() < end {
                match tokio::time::timeout(Duration::from_micros(1), r.recv()).await {
                    Ok(m) => { let m = m?; let v = u32::from_be_bytes(m.data().unwrap().try_into().unwrap()); if v != next { order_ok = false } next = v + 1; got += 1 }
                    Err(_) => cancelled += 1,
                }
            }
            println!("received {got}/20000, cancelled recv futures {cancelled}, in order without gaps: {order_ok}");
        }
        "hwm-test" => {
            let s = ctx.socket(SocketType::Push)?;
            base(&s).await?;
            s.set_option_raw(SNDHWM, &10i32.to_ne_bytes()).await?;
            s.connect("tcp://127.0.0.1:9").await?;
            let mut ok = 0;
            for i in 0..50 {
                match tokio::time::timeout(Duration::from_millis(200), s.send(Msg::from_vec(format!("n{i}").into_bytes()))).await {
                    Ok(Ok(())) => ok += 1,
                    Ok(Err(e)) => { println!("send {i} error: {e}"); break }
                    Err(_) => { println!("send {i} blocked (timed out after 200 ms)"); break }
                }
            }
            println!("sends completed with no peer: {ok}");
        }
        _ => eprintln!("usage: see b-omq"),
    }
    Ok(())
}
