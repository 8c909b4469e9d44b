//! The components a worker can call: linked into the binary (they register
//! themselves, [`registry`]) or loaded from shared libraries through the
//! versioned C ABI ([`dynamic`], the only module here with `unsafe` code).

pub mod dynamic;
pub mod registry;
