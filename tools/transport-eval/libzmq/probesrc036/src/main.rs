use std::ffi::CString;
extern "C" {
    fn zmq_has(capability: *const std::os::raw::c_char) -> i32;
    fn zmq_version(a: *mut i32, b: *mut i32, c: *mut i32);
    fn zmq_curve_keypair(p: *mut u8, s: *mut u8) -> i32;
}
fn main() {
    unsafe {
        let (mut a, mut b, mut c) = (0, 0, 0);
        zmq_version(&mut a, &mut b, &mut c);
        let cap = CString::new("curve").unwrap();
        let mut p = [0u8; 41]; let mut s = [0u8; 41];
        let rc = zmq_curve_keypair(p.as_mut_ptr(), s.as_mut_ptr());
        println!("zeromq-src 0.3.6 libzmq {a}.{b}.{c} has(curve)={} curve_keypair rc={rc} pub={}",
            zmq_has(cap.as_ptr()), String::from_utf8_lossy(&p[..40]));
    }
}
