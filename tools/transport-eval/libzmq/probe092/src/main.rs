fn main() {
    let (a, b, c) = zmq::version();
    println!("libzmq {}.{}.{} has curve={} ipc={} tipc={}", a, b, c,
        zmq::has("curve").unwrap_or(false), zmq::has("ipc").unwrap_or(false), zmq::has("tipc").unwrap_or(false));
    match zmq::CurveKeyPair::new() {
        Ok(kp) => println!("CurveKeyPair ok public={}", zmq::z85_encode(&kp.public_key).unwrap()),
        Err(e) => println!("CurveKeyPair error: {e}"),
    }
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::PULL).unwrap();
    println!("set_curve_server: {:?}", s.set_curve_server(true));
}
