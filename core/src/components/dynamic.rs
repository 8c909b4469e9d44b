//! Components loaded at run time from shared libraries (the loading side of
//! the C ABI in `zmanager_sdk::abi`, which documents it).
//!
//! [`load`] opens a library, refuses it unless it reports this ABI version
//! and exports every function of the ABI, reads its descriptor (name,
//! version, actions) and checks it, and returns a [`DynamicComponent`]
//! that a [`Registry`](crate::components::registry::Registry) holds like any linked one.
//! Every refusal is a [`LoadError`] that names the file and says why.
//!
//! Only MessagePack bytes cross the boundary. Buffers a library returns are
//! copied, then handed back to that library's own `free`. Libraries are
//! never unloaded: their code and the names they gave stay valid for the
//! life of the process (a library loaded twice is the same library).
//!
//! This is the only module of this crate with `unsafe` code; each block
//! says why it is sound. What no block can check is the library itself:
//! loading one runs its code in this process, so load only libraries you
//! would link.

#![allow(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};

use libloading::Library;
use zmanager_sdk::abi::{
    self, ABI_VERSION, AbiVersionFn, Buffer, CallFn, DescribeFn, Descriptor, FreeFn,
};
use zmanager_sdk::{ActionError, Component, Request};

use crate::catalog::mapping::is_identifier;

/// Why a library was refused. Every message starts with the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file is missing, or is not a shared library for this platform.
    #[error("{path}: cannot load it as a shared library: {reason}")]
    Open { path: String, reason: String },
    /// A library, but not a zmanager component.
    #[error(
        "{path}: not a zmanager component: it does not export `{symbol}`",
        symbol = abi::symbol::ABI_VERSION
    )]
    NotAComponent { path: String },
    /// Built against another version of the ABI.
    #[error(
        "{path}: built for component ABI version {found}, but this zmanager loads version {ABI_VERSION}; rebuild it against this zmanager-sdk"
    )]
    AbiVersion { path: String, found: u32 },
    /// The right version, but a function of the ABI is missing.
    #[error(
        "{path}: does not export `{symbol}`, which component ABI version {ABI_VERSION} requires"
    )]
    MissingSymbol { path: String, symbol: &'static str },
    /// The descriptor does not decode, or describes something unusable.
    #[error("{path}: {reason}")]
    Descriptor { path: String, reason: String },
}

/// The functions a library exports, resolved once at load.
#[derive(Clone, Copy)]
struct Functions {
    call: CallFn,
    free: FreeFn,
}

/// A component served by a shared library.
pub struct DynamicComponent {
    name: &'static str,
    version: &'static str,
    actions: &'static [&'static str],
    path: PathBuf,
    functions: Functions,
}

impl fmt::Debug for DynamicComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamicComponent")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("actions", &self.actions)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DynamicComponent {
    /// The library it was loaded from (absolute).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Loads the component in the library at `path` (relative paths are taken
/// from the current directory, never searched for).
pub fn load(path: &Path) -> Result<DynamicComponent, LoadError> {
    let path = absolute(path);
    let shown = path.display().to_string();
    let library = open(&path).map_err(|e| {
        // dlerror's message starts with the file again.
        let reason = e.to_string();
        LoadError::Open {
            reason: reason
                .strip_prefix(&format!("{shown}: "))
                .map_or(reason.clone(), str::to_owned),
            path: shown.clone(),
        }
    })?;
    // Never unloaded: see the module docs.
    let library: &'static Library = Box::leak(Box::new(library));

    // SAFETY: every ABI version exports `zmanager_component_abi_version`
    // with this signature (it is frozen), so the type is right for any
    // library that exports the name at all.
    let abi_version = unsafe { symbol::<AbiVersionFn>(library, abi::symbol::ABI_VERSION) }
        .ok_or_else(|| LoadError::NotAComponent {
            path: shown.clone(),
        })?;
    // SAFETY: the function takes nothing and returns a u32; the SDK's
    // version of it catches panics.
    let found = unsafe { abi_version() };
    if found != ABI_VERSION {
        return Err(LoadError::AbiVersion { path: shown, found });
    }

    let missing = |symbol| LoadError::MissingSymbol {
        path: shown.clone(),
        symbol,
    };
    // SAFETY: the library reports this ABI version, whose functions have
    // exactly these types (`zmanager_sdk::abi`).
    let (describe, call, free) = unsafe {
        (
            symbol::<DescribeFn>(library, abi::symbol::DESCRIBE),
            symbol::<CallFn>(library, abi::symbol::CALL),
            symbol::<FreeFn>(library, abi::symbol::FREE),
        )
    };
    let describe = describe.ok_or_else(|| missing(abi::symbol::DESCRIBE))?;
    let call = call.ok_or_else(|| missing(abi::symbol::CALL))?;
    let free = free.ok_or_else(|| missing(abi::symbol::FREE))?;
    let functions = Functions { call, free };

    let refuse = |reason: String| LoadError::Descriptor {
        path: shown.clone(),
        reason,
    };
    // SAFETY: `describe` takes nothing and returns a buffer of this library,
    // which `take` frees with the same library's `free`.
    let bytes = take(functions, unsafe { describe() })
        .ok_or_else(|| refuse(format!("`{}` returned nothing", abi::symbol::DESCRIBE)))?;
    let descriptor = match abi::decode_outcome(&bytes) {
        Ok(Ok(descriptor)) => descriptor,
        Ok(Err(error)) => {
            return Err(refuse(format!(
                "`{}` failed: {error}",
                abi::symbol::DESCRIBE
            )));
        }
        Err(reason) => return Err(refuse(format!("malformed descriptor outcome: {reason}"))),
    };
    let descriptor: Descriptor = zmanager_sdk::decode(&descriptor)
        .map_err(|e| refuse(format!("its descriptor does not decode: {e}")))?;
    validate(&descriptor).map_err(refuse)?;

    let actions: Vec<&'static str> = descriptor.actions.into_iter().map(leak).collect();
    Ok(DynamicComponent {
        name: leak(descriptor.name),
        version: leak(descriptor.version),
        actions: Vec::leak(actions),
        path,
        functions,
    })
}

/// `path` made absolute, `..` and links resolved when the file exists:
/// the name a library is reported and loaded by.
pub fn absolute(path: &Path) -> PathBuf {
    path.canonicalize()
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// A descriptor a node can use: this ABI, a name and actions mappings can
/// write, no action twice.
fn validate(descriptor: &Descriptor) -> Result<(), String> {
    if descriptor.abi != ABI_VERSION {
        return Err(format!(
            "its descriptor says ABI version {}, its `{}` says {ABI_VERSION}",
            descriptor.abi,
            abi::symbol::ABI_VERSION
        ));
    }
    if !is_identifier(&descriptor.name) {
        return Err(format!(
            "component name {:?} is not an identifier (letters, digits and `_`), so no mapping can name it",
            descriptor.name
        ));
    }
    if descriptor.actions.is_empty() {
        return Err(format!("component {} declares no actions", descriptor.name));
    }
    for (i, action) in descriptor.actions.iter().enumerate() {
        if !is_identifier(action) {
            return Err(format!(
                "component {} declares action {action:?}, which is not an identifier (letters, digits and `_`)",
                descriptor.name
            ));
        }
        if descriptor.actions[..i].contains(action) {
            return Err(format!(
                "component {} declares action {action:?} twice",
                descriptor.name
            ));
        }
    }
    Ok(())
}

/// The names a library gave live as long as the process (libraries are
/// never unloaded); there is one per loaded library.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

impl Component for DynamicComponent {
    fn name(&self) -> &'static str {
        self.name
    }

    fn version(&self) -> &'static str {
        self.version
    }

    fn actions(&self) -> &'static [&'static str] {
        self.actions
    }

    fn call(&self, action: &str, request: &Request<'_>) -> Result<Vec<u8>, ActionError> {
        let context = abi::encode_context(&request.context)?;
        // SAFETY: `call` has the type of this ABI version (checked at load);
        // each (pointer, length) pair is a live slice for the whole call,
        // which is all the library may read; the buffer it returns is this
        // library's, and `take` frees it with the same library's `free`.
        let buffer = unsafe {
            (self.functions.call)(
                action.as_ptr(),
                action.len(),
                request.payload.as_ptr(),
                request.payload.len(),
                context.as_ptr(),
                context.len(),
            )
        };
        let bytes = take(self.functions, buffer).ok_or_else(|| {
            ActionError::failed(format!(
                "component {} ({}) returned no outcome",
                self.name,
                self.path.display()
            ))
        })?;
        abi::decode_outcome(&bytes).map_err(|reason| {
            ActionError::failed(format!(
                "component {} ({}) returned a malformed outcome: {reason}",
                self.name,
                self.path.display()
            ))
        })?
    }
}

/// Copies a buffer the library returned, then frees it with the library's
/// own `free`. `None` for a null buffer (which owns nothing).
fn take(functions: Functions, buffer: Buffer) -> Option<Vec<u8>> {
    if buffer.ptr.is_null() {
        return None;
    }
    // SAFETY: per the ABI, a non-null buffer returned by the library points
    // to `len` initialised bytes that stay valid until it is freed, which
    // happens just below, after the copy.
    let bytes = unsafe { std::slice::from_raw_parts(buffer.ptr, buffer.len) }.to_vec();
    // SAFETY: the buffer came from this library, unchanged, and is freed
    // once, by the library that allocated it.
    unsafe { (functions.free)(buffer) };
    Some(bytes)
}

/// Looks up `name` as a `T`; `None` when the library does not export it.
///
/// # Safety
///
/// `T` must be the type of the exported item.
unsafe fn symbol<T: Copy + 'static>(library: &'static Library, name: &str) -> Option<T> {
    // SAFETY: the caller guarantees `T` is the symbol's type; the library is
    // never unloaded, so the copied value (a function pointer) stays valid.
    unsafe { library.get::<T>(name.as_bytes()) }
        .ok()
        .map(|symbol| *symbol)
}

/// Opens a library, resolving all its symbols now so that a library with an
/// unresolved dependency fails here, with its name, not at its first call.
#[cfg(unix)]
fn open(path: &Path) -> Result<Library, libloading::Error> {
    use libloading::os::unix::{Library as UnixLibrary, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: loading runs the library's initialisers in this process. The
    // operator named this file as a component to run here (`--component`
    // or the node configuration), which is the same trust as linking it.
    unsafe { UnixLibrary::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map(Library::from)
}

#[cfg(not(unix))]
fn open(path: &Path) -> Result<Library, libloading::Error> {
    // SAFETY: as for unix above: the operator named this file as a component.
    unsafe { Library::new(path) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(name: &str, actions: &[&str]) -> Descriptor {
        Descriptor {
            abi: ABI_VERSION,
            name: name.into(),
            version: "1.0.0".into(),
            actions: actions.iter().map(|&a| a.to_owned()).collect(),
            sdk: "0.1.0".into(),
        }
    }

    #[test]
    fn a_descriptor_must_name_usable_actions() {
        assert_eq!(
            validate(&descriptor("Reverse", &["reverse", "count"])),
            Ok(())
        );
        for (d, expected) in [
            (
                descriptor("", &["a"]),
                "component name \"\" is not an identifier",
            ),
            (
                descriptor("Re.verse", &["a"]),
                "component name \"Re.verse\"",
            ),
            (descriptor("R", &[]), "component R declares no actions"),
            (
                descriptor("R", &["a b"]),
                "declares action \"a b\", which is not",
            ),
            (descriptor("R", &["a", "a"]), "declares action \"a\" twice"),
            (
                Descriptor {
                    abi: 2,
                    ..descriptor("R", &["a"])
                },
                "its descriptor says ABI version 2",
            ),
        ] {
            let error = validate(&d).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn a_missing_file_and_a_file_that_is_not_a_library_are_refused() {
        let error = load(Path::new("/nonexistent/libnothing.so")).unwrap_err();
        assert!(
            matches!(&error, LoadError::Open { path, .. } if path == "/nonexistent/libnothing.so"),
            "{error}"
        );
        let dir = std::env::temp_dir().join(format!("zmanager-dynamic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = dir.join("libtext.so");
        std::fs::write(&text, "not a library\n").unwrap();
        let error = load(&text).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "{}: cannot load it as a shared library",
                text.display()
            )),
            "{message}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
