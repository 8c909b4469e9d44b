//! `zmanager check`: validate flows and mappings without running anything.

use std::path::PathBuf;
use std::process::ExitCode;

use zmanager::catalog::{Catalog, StepRole};
use zmanager::diagnostic::Diagnostics;
use zmanager::source::SourceFile;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Directory of flow files (`*.ini`, `*.toml`).
    #[arg(long, default_value = "flows")]
    flows: PathBuf,
    /// Directory of action-mapping files (`*.ini`, `*.toml`).
    #[arg(long, default_value = "action_mappings")]
    mappings: PathBuf,
    /// Print only the diagnostics, not the flows.
    #[arg(long, short)]
    quiet: bool,
}

pub(crate) fn run(args: &Args) -> ExitCode {
    let mut diagnostics = Diagnostics::default();
    let flow_files = SourceFile::read_dir(&args.flows, &mut diagnostics);
    let mapping_files = SourceFile::read_dir(&args.mappings, &mut diagnostics);
    let (catalog, found) = Catalog::build(&flow_files, &mapping_files);
    diagnostics.extend(found);

    if !args.quiet {
        print_catalog(&catalog);
    }
    for d in diagnostics.iter() {
        eprintln!("{d}");
    }
    let errors = diagnostics.errors().count();
    let warnings = diagnostics.warnings().count();
    eprintln!(
        "{} flows, {} mappings in {} + {} files: {errors} errors, {warnings} warnings",
        catalog.flows.len(),
        catalog.mappings.len(),
        flow_files.len(),
        mapping_files.len(),
    );
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_catalog(catalog: &Catalog) {
    for routed in catalog.flows.values() {
        let flow = &routed.flow;
        println!("flow {}  ({})", flow.name, flow.location);
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
                StepRole::Action(target) => format!("-> {target}"),
                StepRole::Unresolved => "UNRESOLVED".to_owned(),
            };
            let via = via
                .as_ref()
                .map(|v| format!("  [`{}` at {}]", v.key, v.location))
                .unwrap_or_default();
            let key = step.key.to_string();
            println!("  {index:>2}  {key:<width$}  {role}{via}");
        }
    }
}
