//! `ZMQ_XPUB_MANUAL`, the one socket option of the node's that the `zmq`
//! crate does not wrap. Its `unsafe` calls libzmq's C API; this module is
//! one of the few allowed `unsafe` (`tests/tests/components.rs` keeps the
//! list).

/// Turns on `ZMQ_XPUB_MANUAL` (an XPUB socket, before it binds): a
/// subscription takes effect only when `set_subscribe` is called right
/// after it was received, so the node decides who may read what. The `zmq`
/// crate does not wrap this option.
#[allow(unsafe_code)]
pub(super) fn set_xpub_manual(socket: &mut zmq::Socket) -> Result<(), zmq::Error> {
    let on: i32 = 1;
    let option = i32::try_from(zmq_sys::ZMQ_XPUB_MANUAL).map_err(|_| zmq::Error::EINVAL)?;
    // SAFETY: the pointer is this live socket's, `on` is the int the option
    // takes, and its size is passed with it.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            option,
            std::ptr::from_ref(&on).cast(),
            std::mem::size_of::<i32>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: reads this thread's last libzmq error; no arguments.
    Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }))
}
