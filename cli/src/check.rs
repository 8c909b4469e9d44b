//! `zmanager check`: validate flows, mappings and components without
//! running anything.

use std::path::PathBuf;
use std::process::ExitCode;

use zmanager::catalog::diagnostic::Diagnostics;
use zmanager::catalog::source::SourceFile;
use zmanager::catalog::{Catalog, StepRole};
use zmanager::components::registry::Registry;
use zmanager::digitalpy::config::NodeSettings;
use zmanager::digitalpy::tree::Tree;
use zmanager::node::config::NodeConfig;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Node configuration (TOML): check what `zmanager up --config` would
    /// run (its flows, mappings and components).
    #[arg(long, short, env = "ZMANAGER_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of flow files (`*.ini`, `*.toml`) [default: the
    /// configuration's, or the built-in flows, as `zmanager up`].
    #[arg(long)]
    flows: Option<PathBuf>,
    /// Directory of action-mapping files (`*.ini`, `*.toml`) [default: the
    /// configuration's, or the built-in mappings, as `zmanager up`].
    #[arg(long)]
    mappings: Option<PathBuf>,
    /// A dynamic component's shared library to load and check (repeatable;
    /// added to the configuration's `components`).
    #[arg(long = "component", value_name = "PATH")]
    components: Vec<PathBuf>,
    /// A DigitalPy application's directory (or its package's
    /// `digitalpy/core`): check its flows, its components' mapping files
    /// and manifests, and its `configuration_management.ini`, as found
    /// there (docs/digitalpy.md).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["flows", "mappings"])]
    digitalpy: Option<PathBuf>,
    /// Print only the diagnostics, not the flows.
    #[arg(long, short)]
    quiet: bool,
}

pub(crate) fn run(args: &Args) -> ExitCode {
    let mut diagnostics = Diagnostics::default();
    let config = match args.config.as_deref().map(NodeConfig::from_file) {
        Some(Ok(config)) => Some(config),
        Some(Err(e)) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
        None => None,
    };
    // What `zmanager up` would run: the flag's directory, else the
    // configuration's, else the built-in files.
    let dir = |flag: &Option<PathBuf>, configured: Option<&PathBuf>| {
        flag.clone().or_else(|| configured.cloned())
    };
    let flows = dir(
        &args.flows,
        config.as_ref().and_then(|c| c.catalog.flows.as_ref()),
    );
    let mappings = dir(
        &args.mappings,
        config.as_ref().and_then(|c| c.catalog.mappings.as_ref()),
    );
    let read =
        |dir: &Option<PathBuf>, builtin: fn() -> Vec<SourceFile>, d: &mut Diagnostics| match dir {
            Some(dir) => SourceFile::read_dir(dir, d),
            None => builtin(),
        };
    let mut node = None;
    let (flow_files, mapping_files) = match &args.digitalpy {
        Some(dir) => {
            let tree = Tree::discover(dir, &mut diagnostics);
            node = tree
                .node
                .as_ref()
                .map(|file| zmanager::digitalpy::config::read(file, &mut diagnostics));
            (tree.flows, tree.mappings)
        }
        None => (
            read(&flows, zmanager::catalog::defaults::flows, &mut diagnostics),
            read(
                &mappings,
                zmanager::catalog::defaults::mappings,
                &mut diagnostics,
            ),
        ),
    };
    let (catalog, found) = Catalog::build(&flow_files, &mapping_files);
    diagnostics.extend(found);
    if let Some(security) = config.as_ref().and_then(|c| c.security.as_ref()) {
        security.check_steps(&catalog, &mut diagnostics);
    }

    let mut libraries: Vec<PathBuf> = config.map(|c| c.components).unwrap_or_default();
    libraries.extend(args.components.iter().cloned());
    let registry = Registry::with_libraries(&libraries, &mut diagnostics);
    registry.check(&catalog, &mut diagnostics);
    zmanager::catalog::manifest::check_dependencies(
        &catalog.manifests,
        |name| registry.get(name).is_some(),
        &mut diagnostics,
    );

    if !args.quiet {
        print_components(&registry);
        if let Some(node) = &node {
            print_node(node);
        }
        print_manifests(&catalog, &registry);
        print_catalog(&catalog, &registry);
    }
    let diagnostics = diagnostics.sorted();
    for d in diagnostics.iter() {
        eprintln!("{d}");
    }
    let errors = diagnostics.errors().count();
    let warnings = diagnostics.warnings().count();
    let notes = match diagnostics.notes().count() {
        0 => String::new(),
        n => format!(", {n} notes"),
    };
    eprintln!(
        "{} flows, {} mappings in {} + {} files, {} components: {errors} errors, {warnings} warnings{notes}",
        catalog.flows.len(),
        catalog.mappings.len(),
        flow_files.len(),
        mapping_files.len(),
        registry.components().count(),
    );
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_components(registry: &Registry) {
    for (name, component, origin) in registry.components() {
        println!(
            "component {name} {}  ({origin}): {}",
            component.version(),
            component.actions().join(", ")
        );
    }
}

/// What a DigitalPy `configuration_management.ini` gives the node.
fn print_node(node: &NodeSettings) {
    let workers = node
        .workers
        .map_or_else(|| "one per core".to_owned(), |n| n.to_string());
    println!(
        "node  ({}): intake={} workers={} publish={}, {workers} worker processes",
        node.file, node.endpoints.intake, node.endpoints.workers, node.endpoints.publish
    );
}

/// Each DigitalPy manifest: the component, what it requires, and whether
/// a component of that name is linked or loaded here.
fn print_manifests(catalog: &Catalog, registry: &Registry) {
    for m in &catalog.manifests {
        let depends = if m.dependencies.is_empty() {
            String::new()
        } else {
            format!(", depends on {}", m.dependencies.join(", "))
        };
        let here = match registry.origin(&m.name) {
            Some(origin) => format!("component {} {origin}", m.name),
            None => format!("no component {} is linked or loaded here", m.name),
        };
        println!(
            "manifest {} {}  ({}): requires DigitalPy {}{depends}; {here}",
            m.name,
            m.version.as_deref().unwrap_or("(no version)"),
            m.location,
            m.required_alfa_version.as_deref().unwrap_or("(none)"),
        );
    }
}

fn print_catalog(catalog: &Catalog, registry: &Registry) {
    for routed in catalog.flows.values() {
        let flow = &routed.flow;
        match &flow.order_by {
            Some(by) => println!("flow {}  ({})  ordered by {by}", flow.name, flow.location),
            None => println!("flow {}  ({})", flow.name, flow.location),
        }
        let width = flow
            .steps
            .iter()
            .map(|s| s.key.to_string().len())
            .max()
            .unwrap_or(0);
        for (index, (step, (role, via))) in flow.steps.iter().zip(&routed.roles).enumerate() {
            let role = match role {
                StepRole::Entry => "entry (pushed by a service)".to_owned(),
                StepRole::Done => "done (result published)".to_owned(),
                StepRole::Publish => "PUBLISH (published by the Integration Manager)".to_owned(),
                StepRole::Async => "ASYNC (suspends until a response arrives)".to_owned(),
                StepRole::Service(name) => format!("service {name}"),
                StepRole::Action(target) => match registry.origin(&target.component) {
                    Some(zmanager::components::registry::Origin::Loaded { .. }) => {
                        format!("-> {target} (loaded)")
                    }
                    Some(_) => format!("-> {target}"),
                    None => format!("-> {target} (MISSING)"),
                },
                StepRole::Unresolved => "UNRESOLVED".to_owned(),
            };
            let via = via
                .as_ref()
                .map(|v| format!("  [`{}` at {}]", v.key, v.location))
                .unwrap_or_default();
            let key = step.key.to_string();
            let entry = if flow.entries.contains(&index) {
                "  (entry point: a request at this step runs from the next)"
            } else {
                ""
            };
            println!("  {index:>2}  {key:<width$}  {role}{via}{entry}");
            if let Some(p) = catalog.retry_policy(&flow.name, index) {
                let no_retry = if p.no_retry.is_empty() {
                    String::new()
                } else {
                    format!(", not {}", p.no_retry.join(", "))
                };
                println!(
                    "      {:<width$}  retry: {} attempts, {} ms x{} up to {} ms, jitter {}{no_retry}",
                    "",
                    p.max_attempts,
                    p.initial_delay.as_millis(),
                    p.multiplier,
                    p.max_delay.as_millis(),
                    p.jitter,
                );
            }
        }
    }
}
