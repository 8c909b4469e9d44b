//! The log: `tracing` events on stderr, filtered by `RUST_LOG` (default
//! `info`), as text — colored on a terminal unless `NO_COLOR` is set — or,
//! with `--log-format json` or `ZMANAGER_LOG_FORMAT=json`, one JSON object
//! a line.
//!
//! The node's worker processes (and the processes `zmanager bench`
//! starts) are `zmanager` too, and take their format from
//! `ZMANAGER_LOG_FORMAT`, which they inherit: see [`export`].

use std::ffi::OsString;

/// The variable the format is read from when `--log-format` is not given.
pub(crate) const FORMAT_VAR: &str = "ZMANAGER_LOG_FORMAT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// For people: `2026-12-01T10:00:00.000000Z  INFO target: message
    /// field=value`.
    #[default]
    Text,
    /// For log collectors: one object a line, `{"timestamp", "level",
    /// "fields": {"message", ...the event's fields}, "target"}`, and the
    /// spans the event is in (`"span"`, `"spans"`).
    Json,
}

impl LogFormat {
    fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// Installs the global subscriber on stderr.
pub(crate) fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => log
            .with_ansi(colored(
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
                std::env::var_os("NO_COLOR"),
            ))
            .init(),
        LogFormat::Json => log.json().with_ansi(false).init(),
    }
}

/// Whether the log is colored: on a terminal, unless `NO_COLOR` is set to
/// anything but the empty string (no-color.org).
pub(crate) fn colored(terminal: bool, no_color: Option<OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Makes `format` the one the processes this one starts log in, before
/// anything else runs: when `ZMANAGER_LOG_FORMAT` says otherwise (the
/// format came from `--log-format`), this process executes itself again —
/// the same program, pid and arguments — with the variable set, and its
/// children inherit it. `std::env::set_var` would do it in place, but
/// Rust 2024 makes it `unsafe` (another thread may read the environment
/// at the same moment), and this crate has no `unsafe` code. Returns only
/// when there is nothing to do, or with the error if the new image could
/// not be executed (the children then log as text).
pub(crate) fn export(format: LogFormat) -> std::io::Result<()> {
    if !needs_export(format, std::env::var_os(FORMAT_VAR)) {
        return Ok(());
    }
    exec_with(format)
}

/// True when the children would not log in `format` as it is: the
/// variable names another format, or is unset (text) and `format` is not
/// text.
fn needs_export(format: LogFormat, var: Option<OsString>) -> bool {
    match var {
        None => format != LogFormat::Text,
        Some(v) => v != format.name(),
    }
}

#[cfg(unix)]
fn exec_with(format: LogFormat) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    let error = std::process::Command::new(std::env::current_exe()?)
        .arg0(arg0)
        .args(args)
        .env(FORMAT_VAR, format.name())
        .exec();
    Err(error)
}

#[cfg(not(unix))]
fn exec_with(_format: LogFormat) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "set ZMANAGER_LOG_FORMAT instead of --log-format for the processes this one starts",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_turns_the_colors_off() {
        assert!(colored(true, None));
        assert!(!colored(true, Some("1".into())));
        assert!(colored(true, Some("".into())), "empty: as if unset");
        assert!(!colored(false, None), "not a terminal");
    }

    #[test]
    fn the_variable_is_set_again_only_when_it_says_otherwise() {
        assert!(needs_export(LogFormat::Json, None));
        assert!(needs_export(LogFormat::Json, Some("text".into())));
        assert!(!needs_export(LogFormat::Json, Some("json".into())));
        assert!(!needs_export(LogFormat::Text, Some("text".into())));
        assert!(needs_export(LogFormat::Text, Some("json".into())));
        // Text is what a process without the variable writes: the default
        // run is never executed again.
        assert!(!needs_export(LogFormat::Text, None));
    }
}
