//! Every file under `flows/` and `action_mappings/` loads without error.

use zmanager::catalog::diagnostic::Diagnostics;
use zmanager::catalog::source::SourceFile;
use zmanager::catalog::{Catalog, StepRole};
use zmanager_tests::workspace_root;

#[test]
fn every_shipped_flow_and_mapping_loads() {
    let mut diagnostics = Diagnostics::default();
    let flows = SourceFile::read_dir(&workspace_root().join("flows"), &mut diagnostics);
    let mappings =
        SourceFile::read_dir(&workspace_root().join("action_mappings"), &mut diagnostics);
    assert!(!flows.is_empty() && !mappings.is_empty());
    let (catalog, found) = Catalog::build(&flows, &mappings);
    diagnostics.extend(found);
    assert!(diagnostics.is_empty(), "{diagnostics}");
    for routed in catalog.flows.values() {
        assert!(!routed.flow.steps.is_empty());
        assert!(routed.roles.iter().all(|(r, _)| *r != StepRole::Unresolved));
    }
    let greeting = catalog.flow("Greeting").expect("the quickstart flow ships");
    assert_eq!(greeting.flow.steps.len(), 5);
}

#[test]
fn the_built_in_defaults_embed_every_shipped_file() {
    let names = |dir: &str| -> Vec<String> {
        let mut d = Diagnostics::default();
        let mut names: Vec<String> = SourceFile::read_dir(&workspace_root().join(dir), &mut d)
            .iter()
            .map(|f| f.name.rsplit('/').next().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        names
    };
    let embedded = |files: Vec<SourceFile>| -> Vec<String> {
        let mut names: Vec<String> = files
            .iter()
            .map(|f| f.name.rsplit('/').next().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        embedded(zmanager::catalog::defaults::flows()),
        names("flows")
    );
    assert_eq!(
        embedded(zmanager::catalog::defaults::mappings()),
        names("action_mappings")
    );
}

/// The configuration examples in the README and in the config module's docs
/// are real configurations: every key exists and sits in the right table.
#[test]
fn the_documented_node_configurations_parse() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README");
    let section = readme
        .split("## Configure a node")
        .nth(1)
        .expect("a configuration section");
    let example = toml_block(section).expect("a toml block");
    let config = zmanager::node::config::NodeConfig::from_toml("README.md", &example)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.workers, Some(2));
    assert_eq!(config.components.len(), 1);
    // The bounds it shows are the defaults.
    let defaults = zmanager::node::config::NodeConfig::default();
    assert_eq!(
        (
            config.max_pending,
            config.max_pending_mb,
            config.max_message_bytes,
            config.dedupe_capacity,
            config.dedupe_max_mb,
            config.handshake_timeout,
        ),
        (
            defaults.max_pending,
            defaults.max_pending_mb,
            defaults.max_message_bytes,
            defaults.dedupe_capacity,
            defaults.dedupe_max_mb,
            defaults.handshake_timeout,
        )
    );
    assert_eq!(
        (
            defaults.max_pending_mb,
            defaults.max_message_bytes,
            defaults.dedupe_max_mb
        ),
        (256, 1 << 20, 64)
    );
    assert_eq!(
        defaults.handshake_timeout,
        std::time::Duration::from_secs(5)
    );

    let module = std::fs::read_to_string(workspace_root().join("core/src/node/config.rs"))
        .expect("config.rs");
    let docs: String = module
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
        .collect();
    let example = toml_block(&docs).expect("a toml block in config.rs docs");
    zmanager::node::config::NodeConfig::from_toml("config.rs", &example)
        .unwrap_or_else(|e| panic!("{e}"));
}

fn toml_block(text: &str) -> Option<String> {
    let start = text.find("```toml\n")? + "```toml\n".len();
    let end = start + text[start..].find("```")?;
    Some(text[start..end].to_owned())
}
