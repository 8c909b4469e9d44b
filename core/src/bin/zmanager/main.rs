//! The `zmanager` command: thin wrappers over the `zmanager` library.

mod check;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Message-driven applications out of components, wired by ZeroMQ.
#[derive(Debug, Parser)]
#[command(name = "zmanager", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate flows and action mappings; print how each step resolves.
    Check(check::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check::run(&args),
    }
}
