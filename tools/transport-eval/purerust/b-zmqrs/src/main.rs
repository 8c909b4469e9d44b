// zeromq (zmq.rs) 0.7.0 baseline programs, NULL only. Same modes as b-omq.
use bytes::Bytes;
use std::time::{Duration, Instant};
use zeromq::util::PeerIdentity;
use zeromq::{
    DealerSocket, PullSocket, PushSocket, RouterSocket, Socket, SocketOptions, SocketRecv,
    SocketSend, ZmqMessage,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let mode = a.get(1).map(String::as_str).unwrap_or("");
    let ep = |p: &str| format!("tcp://127.0.0.1:{p}");
    match mode {
        "null-pull" => {
            let mut s = PullSocket::new();
            s.bind(&ep(&a[2])).await?;
            println!("READY");
            loop {
                let m = s.recv().await?;
                println!("[recv] {:?}", m.get(0).map(|b| String::from_utf8_lossy(b).into_owned()));
            }
        }
        "bench-pull" => {
            let n: u64 = a[3].parse()?;
            let mut s = PullSocket::new();
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
            let mut s = PushSocket::new();
            s.connect(&ep(&a[2])).await?;
            let payload = Bytes::from(vec![7u8; 64]);
            for _ in 0..n {
                s.send(ZmqMessage::from(payload.clone())).await?;
            }
            // zmq.rs has no linger; give the writer time to flush before close.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = s.close().await;
        }
        "bench-router" => {
            let n: u64 = a[3].parse()?;
            let mut s = RouterSocket::new();
            s.bind(&ep(&a[2])).await?;
            let mut ids = vec![];
            while ids.len() < 2 {
                let m = s.recv().await?;
                ids.push(m.get(0).unwrap().clone());
            }
            let payload = Bytes::from(vec![7u8; 64]);
            let t = Instant::now();
            let mut sent = 0u64;
            for id in &ids {
                for _ in 0..64 {
                    let mut m = ZmqMessage::from(payload.clone());
                    m.push_front(id.clone());
                    s.send(m).await?;
                    sent += 1;
                }
            }
            let mut got = 0u64;
            while got < n {
                let m = s.recv().await?;
                got += 1;
                if sent < n {
                    s.send(m).await?;
                    sent += 1;
                }
            }
            println!("RATE {:.0}", n as f64 / t.elapsed().as_secs_f64());
            for id in &ids {
                let mut m = ZmqMessage::from(Bytes::from_static(b"STOP"));
                m.push_front(id.clone());
                s.send(m).await?;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        "bench-dealers" => {
            let mut hs = vec![];
            for w in 0..2 {
                let mut o = SocketOptions::default();
                o.peer_identity(PeerIdentity::try_from(format!("w{w}").into_bytes())?);
                let mut s = DealerSocket::with_options(o);
                s.connect(&ep(&a[2])).await?;
                hs.push(tokio::spawn(async move {
                    s.send(ZmqMessage::from(Bytes::from_static(b"hello"))).await.unwrap();
                    loop {
                        let m = s.recv().await.unwrap();
                        if m.get(0).map(|b| &b[..]) == Some(b"STOP") {
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
        _ => eprintln!("usage: see b-omq"),
    }
    Ok(())
}
