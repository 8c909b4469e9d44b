//! A DigitalPy application, as its files describe it, read for a zmanager
//! node: `zmanager check --digitalpy DIR` and `zmanager import-digitalpy DIR`.
//!
//! DigitalPy has no one file that says what a node runs: its node is a
//! tree of files found by convention (`DigitalPy.register_flows`,
//! `register_core_components`, the component management's installer):
//! `core_flows.ini` and a component's `*_flows.ini`; each component's
//! `configuration/external_action_mapping.ini`,
//! `internal_action_mapping.ini` and `manifest.ini`; and
//! `configuration_management.ini`, the ZManager's sockets and worker count.
//!
//! - [`tree`]: finds those files under a directory, as DigitalPy would, and
//!   says which other files it does not read and why;
//! - [`config`]: `configuration_management.ini` read into zmanager's node
//!   settings (endpoints, workers), every other setting accounted for;
//! - [`import`]: writes a zmanager node — a `node.toml` and the two
//!   catalog directories it names — from them.
//!
//! The flow and mapping files themselves are read by the
//! [`catalog`](crate::catalog) like any other (the INI dialect, `^` in
//! keys, internal mappings and manifests are the catalog's).
//! `docs/digitalpy.md` is the user's guide.

pub mod config;
pub mod import;
pub mod tree;
