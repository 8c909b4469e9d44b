//! `zmanager import-digitalpy DIR`: a zmanager node (`node.toml`, `flows/`,
//! `action_mappings/`) out of a DigitalPy application's files.

use std::path::PathBuf;
use std::process::ExitCode;

use zmanager::catalog::Catalog;
use zmanager::catalog::diagnostic::Diagnostics;
use zmanager::digitalpy::tree::Tree;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The DigitalPy application's directory (or its package's
    /// `digitalpy/core`).
    dir: PathBuf,
    /// Where to write the node: a new or empty directory.
    #[arg(long, value_name = "DIR", default_value = "digitalpy-node")]
    out: PathBuf,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut diagnostics = Diagnostics::default();
    let tree = Tree::discover(&args.dir, &mut diagnostics);
    let node = tree
        .node
        .as_ref()
        .map(|file| zmanager::digitalpy::config::read(file, &mut diagnostics));
    // Only the manifests are needed; the catalog's own diagnostics are
    // what `zmanager check` on the result reports.
    let (catalog, _) = Catalog::build(&[], &tree.mappings);
    let diagnostics = diagnostics.sorted();
    for d in diagnostics.iter() {
        eprintln!("{d}");
    }
    if diagnostics.has_errors() {
        eprintln!(
            "nothing written: {} errors in the node configuration",
            diagnostics.errors().count()
        );
        return Ok(ExitCode::FAILURE);
    }
    let imported =
        zmanager::digitalpy::import::import(&tree, node.as_ref(), &catalog.manifests, &args.out)?;
    println!(
        "wrote {} ({} flow files in {}, {} mapping files in {})",
        imported.config.display(),
        imported.flows.len(),
        args.out
            .join(zmanager::digitalpy::import::FLOWS_DIR)
            .display(),
        imported.mappings.len(),
        args.out
            .join(zmanager::digitalpy::import::MAPPINGS_DIR)
            .display(),
    );
    println!(
        "next: zmanager check --config {}",
        imported.config.display()
    );
    Ok(ExitCode::SUCCESS)
}
