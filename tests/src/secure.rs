//! A node with `[security]` (`docs/security.md`): its configuration, on ipc
//! sockets in a directory of the test's, and the node started on it.

use std::path::{Path, PathBuf};

use zmanager::security::{self, Key};

use crate::node::TestNode;

/// Writes `dir/node.toml` and returns its path: the three endpoints as ipc
/// sockets in `dir` (a test's own, where no other test's node listens),
/// `[security] key_file = "node.key"` (that is `dir/node.key`, which this
/// does not write), and a `[[security.service]]` for each of `services`:
/// its id, its public key and the TOML lines of its grants, such as
/// `"push = [\"Greeting\"]\n"`.
pub fn write_config(dir: &Path, services: &[(&str, &Key, &str)]) -> PathBuf {
    let mut config = format!(
        "[endpoints]\nintake = \"ipc://{0}/intake.sock\"\nworkers = \"ipc://{0}/workers.sock\"\npublish = \"ipc://{0}/publish.sock\"\n[security]\nkey_file = \"node.key\"\n",
        dir.display()
    );
    for (id, key, grants) in services {
        config.push_str(&format!(
            "[[security.service]]\nid = {id:?}\npublic_key = {:?}\n{grants}",
            security::z85(key)
        ));
    }
    let path = dir.join("node.toml");
    std::fs::write(&path, config).expect("write the configuration");
    path
}

/// A node with one worker on its built-in flows and the configuration at
/// `config` (see [`write_config`]).
pub fn start(config: &Path) -> TestNode {
    TestNode::start_fixed(
        1,
        None,
        &["--config", config.to_str().expect("a utf-8 path")],
    )
}

/// A node with a new key pair (`dir/node.key`, `dir/node.pub`) whose
/// `[security]` lists `services` ([`write_config`]); returns it and its
/// public key.
pub fn node_with(dir: &Path, services: &[(&str, &Key, &str)]) -> (TestNode, Key) {
    let server = security::write_new_pair(&dir.join("node")).expect("node keys");
    let node = start(&write_config(dir, services));
    (node, server)
}
