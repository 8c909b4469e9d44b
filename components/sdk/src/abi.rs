//! The C ABI of a dynamically loaded component, version [`ABI_VERSION`]:
//! the exporting side ([`export_component!`](crate::export_component)) and
//! the encodings both sides share. The loading side is `core/src/components/dynamic.rs`
//! in the `zmanager` crate.
//!
//! Only bytes cross the boundary, never a Rust type: requests, contexts,
//! responses and descriptors are MessagePack. A library exports four
//! functions (C calling convention, unmangled names):
//!
//! | symbol | signature | what |
//! |---|---|---|
//! | `zmanager_component_abi_version` | `() -> u32` | the ABI version the library was built for. **Frozen**: every version exports it with this signature, so a loader can refuse a library built for another version before it looks at anything else. |
//! | `zmanager_component_describe` | `() -> Buffer` | an outcome (below) whose `ok` holds the [`Descriptor`]: ABI version, name, version, actions. |
//! | `zmanager_component_call` | `(action, action_len, payload, payload_len, context, context_len) -> Buffer` | runs an action: `action` is UTF-8, `payload` the request's MessagePack, `context` a [`WireContext`] map. Returns an outcome. The pointers are read during the call only. |
//! | `zmanager_component_free` | `(Buffer)` | frees a buffer this library returned. |
//!
//! A [`Buffer`] is allocated by the library and freed by the same library
//! (`zmanager_component_free`), never by the caller's allocator. An
//! **outcome** is a MessagePack map with one entry: `{"ok": bin}` or
//! `{"error": {"kind": str, "message": str}}`, `kind` one of
//! `bad_request`, `failed`, `unknown_action`, `panicked` (an unknown kind
//! reads as `failed`).
//!
//! Every exported function catches panics: a panic in an action becomes a
//! `panicked` error outcome and never unwinds into the caller. (A library
//! built with `panic = "abort"` aborts the worker process instead; the node
//! then restarts the worker, but the message is lost to it.) Libraries are
//! never unloaded, so nothing a library hands out can dangle.
//!
//! This is the only module of the SDK with `unsafe` code; each block says
//! why it is sound.

#![allow(unsafe_code)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use rmpv::Value;
use serde::{Deserialize, Serialize};

use crate::{ActionError, Component, Context, ErrorKind, Request};

/// The version of this ABI. A loader refuses a library that reports another.
/// Any change to a signature, to [`Buffer`] or to an encoding here is a new
/// version.
pub const ABI_VERSION: u32 = 1;

/// The exported symbols.
pub mod symbol {
    pub const ABI_VERSION: &str = "zmanager_component_abi_version";
    pub const DESCRIBE: &str = "zmanager_component_describe";
    pub const CALL: &str = "zmanager_component_call";
    pub const FREE: &str = "zmanager_component_free";
}

/// `zmanager_component_abi_version`.
pub type AbiVersionFn = unsafe extern "C" fn() -> u32;
/// `zmanager_component_describe`.
pub type DescribeFn = unsafe extern "C" fn() -> Buffer;
/// `zmanager_component_call`.
pub type CallFn =
    unsafe extern "C" fn(*const u8, usize, *const u8, usize, *const u8, usize) -> Buffer;
/// `zmanager_component_free`.
pub type FreeFn = unsafe extern "C" fn(Buffer);

/// Bytes allocated by a library, returned to its caller, and handed back to
/// the same library's `zmanager_component_free`. `ptr` is null only for an
/// empty buffer that owns nothing.
#[repr(C)]
#[derive(Debug)]
pub struct Buffer {
    pub ptr: *mut u8,
    pub len: usize,
    pub capacity: usize,
}

impl Buffer {
    /// Gives up `bytes` to the caller (the library side).
    fn from_vec(bytes: Vec<u8>) -> Self {
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        Self {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
            capacity: bytes.capacity(),
        }
    }

    fn empty() -> Self {
        Self {
            ptr: std::ptr::null_mut(),
            len: 0,
            capacity: 0,
        }
    }
}

/// What `zmanager_component_describe` says about a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// The ABI version again (a loader checks both agree).
    pub abi: u32,
    pub name: String,
    pub version: String,
    pub actions: Vec<String>,
    /// The version of `zmanager-sdk` the library was built with.
    pub sdk: String,
}

impl Descriptor {
    /// Describes `component`.
    pub fn of(component: &dyn Component) -> Self {
        Self {
            abi: ABI_VERSION,
            name: component.name().to_owned(),
            version: component.version().to_owned(),
            actions: component.actions().iter().map(|&a| a.to_owned()).collect(),
            sdk: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// The [`Context`] as it crosses the boundary: a MessagePack map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireContext<'a> {
    #[serde(borrow)]
    pub message_id: &'a str,
    #[serde(borrow)]
    pub flow: &'a str,
    #[serde(borrow)]
    pub key: &'a str,
    #[serde(borrow)]
    pub service: &'a str,
    pub attempt: u32,
}

impl<'a> WireContext<'a> {
    pub fn from_context(context: &Context<'a>) -> Self {
        Self {
            message_id: context.message_id,
            flow: context.flow,
            key: context.key,
            service: context.service,
            attempt: context.attempt,
        }
    }

    pub fn to_context(&self) -> Context<'a> {
        Context {
            message_id: self.message_id,
            flow: self.flow,
            key: self.key,
            service: self.service,
            attempt: self.attempt,
        }
    }
}

/// Encodes a context for `zmanager_component_call` (the loading side).
pub fn encode_context(context: &Context<'_>) -> Result<Vec<u8>, ActionError> {
    rmp_serde::to_vec_named(&WireContext::from_context(context))
        .map_err(|e| ActionError::failed(format!("context does not encode: {e}")))
}

fn decode_context(bytes: &[u8]) -> Result<WireContext<'_>, String> {
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(bytes);
    deserializer.set_max_depth(crate::MAX_DEPTH);
    WireContext::deserialize(&mut deserializer).map_err(|e| e.to_string())
}

/// Encodes an action's outcome (the library side).
pub fn encode_outcome(outcome: Result<Vec<u8>, ActionError>) -> Vec<u8> {
    let value = match outcome {
        Ok(bytes) => Value::Map(vec![(Value::from("ok"), Value::Binary(bytes))]),
        Err(error) => Value::Map(vec![(
            Value::from("error"),
            Value::Map(vec![
                (Value::from("kind"), Value::from(kind_name(error.kind))),
                (Value::from("message"), Value::from(error.message)),
            ]),
        )]),
    };
    let mut out = Vec::new();
    // Writing to a Vec does not fail.
    let _ = rmpv::encode::write_value(&mut out, &value);
    out
}

/// Decodes an outcome (the loading side). `Err(reason)` when the bytes are
/// not an outcome at all.
pub fn decode_outcome(bytes: &[u8]) -> Result<Result<Vec<u8>, ActionError>, String> {
    let value = crate::decode_value(bytes)?;
    let Value::Map(entries) = value else {
        return Err("an outcome is a map".to_owned());
    };
    let mut entries = entries.into_iter();
    let (Some((key, value)), None) = (entries.next(), entries.next()) else {
        return Err("an outcome has exactly one entry".to_owned());
    };
    match (key.as_str(), value) {
        (Some("ok"), Value::Binary(bytes)) => Ok(Ok(bytes)),
        (Some("error"), Value::Map(fields)) => {
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k.as_str() == Some(name))
                    .and_then(|(_, v)| v.as_str())
            };
            let kind = field("kind").ok_or("an error outcome has no `kind` string")?;
            let message = field("message").ok_or("an error outcome has no `message` string")?;
            Ok(Err(ActionError::new(kind_from_name(kind), message)))
        }
        _ => Err("an outcome is {\"ok\": bin} or {\"error\": {kind, message}}".to_owned()),
    }
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::BadRequest => "bad_request",
        ErrorKind::UnknownAction => "unknown_action",
        ErrorKind::Panicked => "panicked",
        ErrorKind::Failed => "failed",
    }
}

fn kind_from_name(name: &str) -> ErrorKind {
    match name {
        "bad_request" => ErrorKind::BadRequest,
        "unknown_action" => ErrorKind::UnknownAction,
        "panicked" => ErrorKind::Panicked,
        _ => ErrorKind::Failed,
    }
}

/// Makes this crate a dynamically loadable component: exports the four
/// functions of the ABI (see [`abi`](crate::abi)) for one component type.
///
/// ```ignore
/// // src/lib.rs of a crate with `[lib] crate-type = ["cdylib"]`
/// zmanager_sdk::export_component!(Reverse);               // made with Default
/// zmanager_sdk::export_component!(Reverse, Reverse::new()); // or an expression
/// ```
///
/// One per library: the symbols have fixed names, so two crates that export
/// cannot be linked into one binary (keep `export_component!` out of a crate
/// you also link into a node, or put it in a small wrapper crate).
#[macro_export]
macro_rules! export_component {
    ($component:ty) => {
        $crate::export_component!(
            $component,
            <$component as ::core::default::Default>::default()
        );
    };
    ($component:ty, $make:expr) => {
        const _: () = {
            static COMPONENT: ::std::sync::LazyLock<$component> =
                ::std::sync::LazyLock::new(|| $make);

            fn component() -> &'static dyn $crate::Component {
                &*COMPONENT
            }

            #[unsafe(no_mangle)]
            extern "C" fn zmanager_component_abi_version() -> u32 {
                $crate::abi::__export::abi_version()
            }

            #[unsafe(no_mangle)]
            extern "C" fn zmanager_component_describe() -> $crate::abi::Buffer {
                $crate::abi::__export::describe(component)
            }

            /// # Safety
            ///
            /// See [`zmanager_sdk::abi::__export::call`].
            #[unsafe(no_mangle)]
            unsafe extern "C" fn zmanager_component_call(
                action: *const u8,
                action_len: usize,
                payload: *const u8,
                payload_len: usize,
                context: *const u8,
                context_len: usize,
            ) -> $crate::abi::Buffer {
                // SAFETY: the caller upholds `call`'s contract, which is this
                // function's own.
                unsafe {
                    $crate::abi::__export::call(
                        component,
                        action,
                        action_len,
                        payload,
                        payload_len,
                        context,
                        context_len,
                    )
                }
            }

            /// # Safety
            ///
            /// See [`zmanager_sdk::abi::__export::free`].
            #[unsafe(no_mangle)]
            unsafe extern "C" fn zmanager_component_free(buffer: $crate::abi::Buffer) {
                // SAFETY: the caller upholds `free`'s contract, which is this
                // function's own.
                unsafe { $crate::abi::__export::free(buffer) }
            }
        };
    };
}

/// Not public API: the bodies of the exported functions.
#[doc(hidden)]
pub mod __export {
    use super::*;

    pub fn abi_version() -> u32 {
        ABI_VERSION
    }

    /// The descriptor, as an outcome; a panic (in the component's
    /// constructor, say) becomes a `panicked` outcome.
    pub fn describe(component: fn() -> &'static dyn Component) -> Buffer {
        let outcome = catch_unwind(|| {
            rmp_serde::to_vec_named(&Descriptor::of(component()))
                .map_err(|e| ActionError::failed(format!("descriptor does not encode: {e}")))
        })
        .unwrap_or_else(|panic| Err(ActionError::from_panic(&*panic)));
        Buffer::from_vec(encode_outcome(outcome))
    }

    /// Runs an action; every failure, panics included, is an error outcome.
    ///
    /// # Safety
    ///
    /// Each `(pointer, length)` pair is either `(null or dangling, 0)` or
    /// describes `length` initialised bytes that stay valid and unchanged
    /// for the duration of the call.
    pub unsafe fn call(
        component: fn() -> &'static dyn Component,
        action: *const u8,
        action_len: usize,
        payload: *const u8,
        payload_len: usize,
        context: *const u8,
        context_len: usize,
    ) -> Buffer {
        // SAFETY: the caller guarantees each pair describes readable bytes
        // for this call; `bytes` copes with the empty and null cases.
        let (action, payload, context) = unsafe {
            (
                bytes(action, action_len),
                bytes(payload, payload_len),
                bytes(context, context_len),
            )
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let component = component();
            let Ok(action) = std::str::from_utf8(action) else {
                return Err(ActionError::unknown_action(
                    component.name(),
                    &String::from_utf8_lossy(action),
                ));
            };
            let context = decode_context(context)
                .map_err(|e| ActionError::failed(format!("context does not decode: {e}")))?;
            let request = Request {
                payload,
                context: context.to_context(),
            };
            component.call(action, &request)
        }))
        .unwrap_or_else(|panic| Err(ActionError::from_panic(&*panic)));
        // Encoding cannot panic in practice; if it did, answer with nothing
        // rather than unwind into the caller.
        catch_unwind(AssertUnwindSafe(|| {
            Buffer::from_vec(encode_outcome(outcome))
        }))
        .unwrap_or_else(|_| Buffer::empty())
    }

    /// Frees a buffer returned by this library.
    ///
    /// # Safety
    ///
    /// `buffer` was returned by this library's `describe` or `call`, is
    /// unchanged, and is freed once.
    pub unsafe fn free(buffer: Buffer) {
        if buffer.ptr.is_null() {
            return;
        }
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: per the contract, the fields are those of a Vec<u8>
            // this library gave up in `Buffer::from_vec`, with this
            // library's allocator, and it is rebuilt once.
            drop(unsafe { Vec::from_raw_parts(buffer.ptr, buffer.len, buffer.capacity) });
        }));
    }

    /// # Safety
    ///
    /// `(ptr, len)` is `(anything, 0)` or `len` readable bytes living for
    /// `'a`.
    unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
        if ptr.is_null() || len == 0 {
            &[]
        } else {
            // SAFETY: per this function's contract.
            unsafe { std::slice::from_raw_parts(ptr, len) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Sample;

    fn echo(value: Value) -> Result<Value, ActionError> {
        Ok(value)
    }

    fn boom(_: Value) -> Result<(), ActionError> {
        panic!("boom on purpose")
    }

    fn who(_: Value, context: &Context<'_>) -> Result<String, ActionError> {
        Ok(format!("{}#{}", context.service, context.attempt))
    }

    crate::component! {
        Sample as "Sample" {
            "echo" => echo,
            "boom" => boom,
            "who" => who,
        }
    }

    // The macro, expanded here as in a component's crate; its functions are
    // called by their symbol names, as a loader does.
    crate::export_component!(Sample);

    // SAFETY: these are the signatures `export_component!` defines above.
    unsafe extern "C" {
        safe fn zmanager_component_abi_version() -> u32;
        safe fn zmanager_component_describe() -> Buffer;
        fn zmanager_component_call(
            action: *const u8,
            action_len: usize,
            payload: *const u8,
            payload_len: usize,
            context: *const u8,
            context_len: usize,
        ) -> Buffer;
        fn zmanager_component_free(buffer: Buffer);
    }

    /// Copies a buffer out and frees it, as the loading side does.
    fn take(buffer: Buffer) -> Vec<u8> {
        assert!(!buffer.ptr.is_null());
        // SAFETY: the buffer was just returned by this "library" and is
        // read before it is freed, once.
        let bytes = unsafe { std::slice::from_raw_parts(buffer.ptr, buffer.len) }.to_vec();
        // SAFETY: returned by this library, unchanged, freed once.
        unsafe { zmanager_component_free(buffer) };
        bytes
    }

    fn call(action: &[u8], payload: &[u8]) -> Result<Vec<u8>, ActionError> {
        let context = encode_context(&Context {
            message_id: "m1",
            flow: "F",
            key: "?F?x",
            service: "svc",
            attempt: 2,
        })
        .unwrap();
        // SAFETY: each pair is a live slice for the duration of the call.
        let buffer = unsafe {
            zmanager_component_call(
                action.as_ptr(),
                action.len(),
                payload.as_ptr(),
                payload.len(),
                context.as_ptr(),
                context.len(),
            )
        };
        decode_outcome(&take(buffer)).unwrap()
    }

    #[test]
    fn the_exports_describe_the_component() {
        assert_eq!(zmanager_component_abi_version(), ABI_VERSION);
        let descriptor = decode_outcome(&take(zmanager_component_describe()))
            .unwrap()
            .unwrap();
        let descriptor: Descriptor = crate::decode(&descriptor).unwrap();
        assert_eq!(
            descriptor,
            Descriptor {
                abi: ABI_VERSION,
                name: "Sample".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                actions: vec!["echo".into(), "boom".into(), "who".into()],
                sdk: env!("CARGO_PKG_VERSION").into(),
            }
        );
    }

    #[test]
    fn a_call_crosses_as_bytes_with_its_context() {
        let payload = crate::respond(&[1, 2, 3]).unwrap();
        assert_eq!(call(b"echo", &payload), Ok(payload.clone()));
        let response = call(b"who", &payload).unwrap();
        assert_eq!(crate::decode::<String>(&response).unwrap(), "svc#2");
    }

    #[test]
    fn errors_and_panics_come_back_as_error_outcomes() {
        let payload = crate::respond(&()).unwrap();
        let error = call(b"boom", &payload).unwrap_err();
        assert_eq!(error, ActionError::panicked("boom on purpose"));
        let error = call(b"nope", &payload).unwrap_err();
        assert_eq!(error, ActionError::unknown_action("Sample", "nope"));
        let error = call(b"\xff", &payload).unwrap_err();
        assert_eq!(error.kind, ErrorKind::UnknownAction);
        let error = call(b"echo", &[]).unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadRequest);
    }

    #[test]
    fn a_context_that_does_not_decode_is_an_error_outcome() {
        let payload = crate::respond(&()).unwrap();
        // SAFETY: each pair is a live slice (or empty) for the call.
        let buffer = unsafe {
            zmanager_component_call(
                b"echo".as_ptr(),
                4,
                payload.as_ptr(),
                payload.len(),
                std::ptr::null(),
                0,
            )
        };
        let error = decode_outcome(&take(buffer)).unwrap().unwrap_err();
        assert_eq!(error.kind, ErrorKind::Failed);
        assert!(
            error.message.starts_with("context does not decode"),
            "{error}"
        );
    }

    #[test]
    fn outcomes_round_trip_and_garbage_is_refused() {
        for outcome in [
            Ok(vec![0xc0]),
            Ok(vec![]),
            Err(ActionError::bad_request("b")),
            Err(ActionError::failed("f")),
            Err(ActionError::unknown_action("C", "a")),
            Err(ActionError::panicked("p")),
        ] {
            assert_eq!(
                decode_outcome(&encode_outcome(outcome.clone())),
                Ok(outcome)
            );
        }
        for garbage in [
            &b""[..],
            b"\xc0",
            b"\x80",
            b"\x81\xa2ok\xc0",
            b"\x82\xa2ok\xc4\x00\xa2ok\xc4\x00",
            b"\x81\xa5error\x80",
            b"\xc1",
        ] {
            assert!(decode_outcome(garbage).is_err(), "{garbage:x?}");
        }
        // An unknown kind from a newer library reads as `failed`.
        let mut newer = encode_outcome(Err(ActionError::failed("x")));
        let at = newer.windows(6).position(|w| w == b"failed").unwrap();
        newer[at..at + 6].copy_from_slice(b"future");
        assert_eq!(
            decode_outcome(&newer).unwrap().unwrap_err().kind,
            ErrorKind::Failed
        );
    }
}
