//! The `zmanager` command: thin wrappers over the `zmanager` library.

mod bench;
mod chaos;
mod check;
mod dlq;
mod import_digitalpy;
mod journal;
mod keys;
mod logging;
mod node_args;
mod reload;
mod replay;
mod send;
mod services;
mod subscribe;
mod times;
mod up;
mod worker;

use std::process::ExitCode;

/// jemalloc for every process this binary runs (node, workers, the bench's
/// services). Its unprefixed `malloc` serves libzmq and loaded components
/// too, so memory freed across them comes from one allocator.
/// `docs/performance.md` has what it changed.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::{Parser, Subcommand};

/// Message-driven applications out of components, wired by ZeroMQ.
#[derive(Debug, Parser)]
#[command(name = "zmanager", version, about)]
struct Cli {
    /// How log lines are written on stderr: `text` (colored on a terminal,
    /// unless NO_COLOR is set) or `json`, one object a line. `RUST_LOG`
    /// filters them. A node's workers log the same way.
    /// Without it: `ZMANAGER_LOG_FORMAT`, then `zmanager up`'s
    /// configuration (`[log] format`), then text.
    #[arg(long, global = true, value_enum, env = "ZMANAGER_LOG_FORMAT")]
    log_format: Option<logging::LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole node: the Subject, the Integration Manager and workers.
    Up(up::Args),
    /// Push a request into a flow and print its result.
    Send(send::Args),
    /// Print what is published on topics.
    Subscribe(subscribe::Args),
    /// Validate flows and action mappings; print how each step resolves.
    Check(check::Args),
    /// Write a zmanager node (node.toml, flows, mappings) from a DigitalPy
    /// application's files (docs/digitalpy.md).
    ImportDigitalpy(import_digitalpy::Args),
    /// List registered services (up/down), or serve the service-management
    /// flows (`services serve`).
    Services(services::Args),
    /// Reload a running node's flows and mappings (docs/reload.md):
    /// requests accepted before finish on the version they started with.
    Reload(reload::Args),
    /// Inspect and replay dead letters.
    Dlq(dlq::Args),
    /// Inspect the journal (stats, list, a message's history) and replay a
    /// time range of it.
    Journal(journal::Args),
    /// Make and show CurveZMQ key pairs (`[security]`, docs/security.md).
    Keys(keys::Args),
    /// Benchmark a node: throughput, latency, CPU and memory, against raw ZeroMQ.
    Bench(bench::Args),
    /// Check a flow under faults (worker and node kills, dropped
    /// connections): lost, duplicated and unexpected results, and how
    /// many times each action ran (docs/chaos.md).
    Chaos(Box<chaos::Args>),
    /// Run one worker process (`zmanager up` starts its own; run this by
    /// hand against a node started with `--workers 0`).
    Worker(worker::Args),
    /// Print a shell completion script: `zmanager completions bash >
    /// ~/.local/share/bash-completion/completions/zmanager`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `zmanager man | man -l -`.
    Man,
    /// Run one service process of `zmanager bench`.
    #[command(hide = true)]
    BenchClient(bench::ClientArgs),
    /// Run one end of `zmanager bench`'s raw ZeroMQ baseline.
    #[command(hide = true)]
    BenchRaw(bench::RawArgs),
}

/// `[log] format` of the configuration `zmanager up --config` is given
/// (`None`: another command, no configuration, or none there; a
/// configuration that does not read is reported by `up` itself, once the
/// log is set up).
fn configured_log_format(command: &Command) -> Option<logging::LogFormat> {
    let Command::Up(args) = command else {
        return None;
    };
    let config = zmanager::node::config::NodeConfig::from_file(args.config.as_deref()?).ok()?;
    Some(match config.log.format? {
        zmanager::node::config::LogFormat::Text => logging::LogFormat::Text,
        zmanager::node::config::LogFormat::Json => logging::LogFormat::Json,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli
        .log_format
        .or_else(|| configured_log_format(&cli.command))
        .unwrap_or_default();
    // A node and a worker install the log with their exporter of spans,
    // once they know whether they have one.
    if !matches!(cli.command, Command::Up(_) | Command::Worker(_))
        && let Err(e) = logging::init(log_format, None)
    {
        return report(Err(e));
    }
    // The processes `up` and `bench` start log as this one does.
    let child_env = logging::child_env(log_format);
    match cli.command {
        Command::Check(args) => check::run(&args),
        Command::ImportDigitalpy(args) => report(import_digitalpy::run(&args)),
        Command::Up(args) => report(up::run(args, log_format, child_env)),
        Command::Send(args) => report(send::run(args)),
        Command::Subscribe(args) => report(subscribe::run(args)),
        Command::Worker(args) => report(worker::run(args, log_format)),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "zmanager",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Man => {
            use clap::CommandFactory;
            report(
                clap_mangen::Man::new(Cli::command())
                    .render(&mut std::io::stdout())
                    .map(|()| ExitCode::SUCCESS)
                    .map_err(anyhow::Error::from),
            )
        }
        Command::Dlq(args) => report(dlq::run(args)),
        Command::Journal(args) => report(journal::run(args)),
        Command::Services(args) => report(services::run(args)),
        Command::Reload(args) => report(reload::run(&args)),
        Command::Keys(args) => report(keys::run(args)),
        Command::Bench(args) => report(bench::run(args, child_env)),
        Command::Chaos(args) => chaos::run(*args, child_env),
        Command::BenchClient(args) => report(bench::client(args)),
        Command::BenchRaw(args) => report(bench::raw(args)),
    }
}

fn report(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

/// A Tokio runtime for a subcommand.
fn runtime(multi_thread: bool) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    Ok(builder.enable_all().build()?)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn completions_and_the_man_page_cover_every_command() {
        use clap::CommandFactory;
        let mut bash = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "zmanager",
            &mut bash,
        );
        let bash = String::from_utf8(bash).expect("utf-8");
        assert!(bash.contains("complete -F _zmanager"), "{bash}");
        let mut man = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut man)
            .expect("renders");
        let man = String::from_utf8(man).expect("utf-8");
        assert!(
            man.starts_with(".ie \\n(.g .ds Aq") || man.contains(".TH zmanager"),
            "{man}"
        );
        for command in [
            "up",
            "send",
            "subscribe",
            "check",
            "import-digitalpy",
            "services",
            "dlq",
            "journal",
            "keys",
            "bench",
            "chaos",
            "worker",
        ] {
            assert!(bash.contains(command), "completions lack {command}");
            // roff writes a command's `-` as `\-`.
            let in_man = command.replace('-', "\\-");
            assert!(man.contains(&in_man), "the man page lacks {command}");
        }
    }

    /// A systemd unit's `ExecStart` line, and the command it runs as
    /// this CLI parses it.
    fn exec_start(unit: &str) -> (&str, Cli) {
        use clap::Parser;
        let exec = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("an ExecStart line");
        let mut words: Vec<&str> = exec.split_whitespace().collect();
        words[0] = "zmanager";
        let cli = Cli::try_parse_from(&words).unwrap_or_else(|e| panic!("{exec}: {e}"));
        (exec, cli)
    }

    /// The shipped systemd unit starts the node with arguments this CLI
    /// takes, on a configuration that loads.
    #[test]
    fn the_systemd_unit_runs_a_command_this_cli_takes() {
        let unit = include_str!("../../packaging/zmanager.service");
        let (exec, cli) = exec_start(unit);
        assert!(matches!(cli.command, super::Command::Up(_)), "{exec}");
        let config = include_str!("../../packaging/node.toml");
        let parsed = zmanager::node::config::NodeConfig::from_toml("node.toml", config)
            .unwrap_or_else(|e| panic!("packaging/node.toml: {e}"));
        assert_eq!(
            parsed.data_dir,
            std::path::Path::new("/var/lib/zmanager"),
            "the unit's StateDirectory"
        );
        assert!(unit.contains("StateDirectory=zmanager"));
    }

    /// The shipped unit of a worker on another host runs `zmanager
    /// worker` with arguments this CLI takes (keys, no identity: each
    /// start makes its own).
    #[test]
    fn the_worker_unit_runs_a_command_this_cli_takes() {
        let (exec, cli) = exec_start(include_str!("../../packaging/zmanager-worker.service"));
        assert!(matches!(cli.command, super::Command::Worker(_)), "{exec}");
        assert!(!exec.contains("--identity"), "{exec}");
        assert!(
            exec.contains("--key-file") && exec.contains("--server-key"),
            "{exec}"
        );
    }

    /// `--log-format` is taken by every command, before or after its name.
    #[test]
    fn every_command_takes_the_log_format() {
        use super::logging::LogFormat;
        use clap::Parser;
        for words in [
            &["zmanager", "--log-format", "json", "check"][..],
            &["zmanager", "check", "--log-format", "json"],
            &[
                "zmanager",
                "worker",
                "--endpoint",
                "tcp://127.0.0.1:1",
                "--identity",
                "w",
            ],
            &["zmanager", "journal", "stats", "--log-format", "text"],
        ] {
            let cli = Cli::try_parse_from(words).unwrap_or_else(|e| panic!("{words:?}: {e}"));
            let expected = if words.contains(&"json") {
                Some(LogFormat::Json)
            } else if words.contains(&"text") {
                Some(LogFormat::Text)
            } else {
                None
            };
            // (The variable is not set where the tests run.)
            if std::env::var_os("ZMANAGER_LOG_FORMAT").is_none() {
                assert_eq!(cli.log_format, expected, "{words:?}");
            }
        }
        assert!(Cli::try_parse_from(["zmanager", "check", "--log-format", "xml"]).is_err());
    }

    /// A Z85 key may begin with `-` (about one in 85 does): every argument
    /// that takes a key takes one that does, as a value, not as a flag
    /// (a worker given such a `--server-key` once exited at start).
    #[test]
    fn a_key_that_begins_with_a_hyphen_is_a_value() {
        use clap::Parser;
        let key = "-mW:lJAj$Oja385k@1.C.W8v-GRBtHh!zR{4H]3%";
        let mut all = Vec::new();
        commands(&Cli::command(), "zmanager".to_owned(), &mut all);
        let mut keys = 0;
        for (path, command) in &all {
            for arg in command.get_arguments() {
                let names = arg.get_value_names().unwrap_or_default();
                if names
                    .iter()
                    .any(|n| n.as_str().split('|').any(|part| part == "KEY"))
                {
                    keys += 1;
                    assert!(
                        arg.is_allow_hyphen_values_set(),
                        "{path} --{}",
                        arg.get_id()
                    );
                }
            }
        }
        assert!(keys >= 2, "the worker's and the clients' --server-key");
        for words in [
            &["zmanager", "worker", "--endpoint", "tcp://127.0.0.1:1"][..],
            &["zmanager", "send", "Echo"],
        ] {
            let mut words = words.to_vec();
            words.extend(["--key-file", "k.key", "--server-key", key]);
            if let Err(e) = Cli::try_parse_from(&words) {
                panic!("{words:?}: {e}");
            }
        }
    }

    /// Every command and subcommand, with its path.
    fn commands(command: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        out.push((path.clone(), command.clone()));
        for sub in command.get_subcommands() {
            commands(sub, format!("{path} {}", sub.get_name()), out);
        }
    }

    /// A short flag means the same long flag in every command (`-w` was
    /// workers for `up` and requests in flight for `bench`).
    #[test]
    fn a_short_flag_means_the_same_everywhere() {
        let mut all = Vec::new();
        commands(&Cli::command(), "zmanager".to_owned(), &mut all);
        let mut meaning: BTreeMap<char, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for (path, command) in &all {
            for arg in command.get_arguments() {
                if let (Some(short), Some(long)) = (arg.get_short(), arg.get_long()) {
                    meaning
                        .entry(short)
                        .or_default()
                        .entry(long.to_owned())
                        .or_default()
                        .push(path.clone());
                }
            }
        }
        let clashes: Vec<String> = meaning
            .iter()
            .filter(|(_, longs)| longs.len() > 1)
            .map(|(short, longs)| format!("-{short}: {longs:?}"))
            .collect();
        assert!(clashes.is_empty(), "{}", clashes.join("\n"));
    }
}
