//! What the kernel says about a process: CPU time and memory, from
//! `/proc/<pid>/stat` and `/proc/<pid>/status` (Linux). On other systems,
//! or for a process that is gone, every reading is `None`.

use serde::Serialize;

/// Clock ticks per second of `utime` and `stime` in `/proc/<pid>/stat`.
/// `USER_HZ` is 100 on every architecture Linux exposes to user space
/// (`sysconf(_SC_CLK_TCK)` would need `libc`, and unsafe code).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProcSample {
    /// User plus system CPU time of all its threads, seconds (10 ms steps).
    pub cpu_s: f64,
    /// Resident memory now, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident memory since it started, KiB (`VmHWM`).
    pub peak_rss_kib: u64,
    /// Proportional resident memory now, KiB (`Pss` of `smaps_rollup`):
    /// pages shared with other processes (the `zmanager` binary, which the
    /// node and its workers all map) are divided among them, so the sum over
    /// processes is their real total. 0 when not readable.
    pub pss_kib: u64,
}

/// Reads `pid`'s CPU time and memory; `None` when it is not readable.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcSample {
        cpu_s: cpu_seconds(&stat)?,
        rss_kib: status_kib(&status, "VmRSS:")?,
        peak_rss_kib: status_kib(&status, "VmHWM:")?,
        pss_kib: std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|rollup| status_kib(&rollup, "Pss:"))
            .unwrap_or(0),
    })
}

/// `utime + stime` of a `/proc/<pid>/stat` line, in seconds.
fn cpu_seconds(stat: &str) -> Option<f64> {
    // pid (comm) state ppid ...: comm may hold spaces and parentheses, so
    // count fields after the last ')'. utime and stime are fields 14 and 15
    // of the line, 12 and 13 after the comm.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// A `Key:   1234 kB` line of `/proc/<pid>/status`.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The live (non-zombie) children of `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect();
    pids.sort_unstable();
    pids
}

/// The parent of `pid`, if it is alive (zombies count as dead).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    fields.next()?.parse().ok()
}

/// The machine, for the record: CPU model, CPUs, kernel, load average.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    /// The 1-minute load average when the benchmark started: other work on
    /// the machine makes every figure noisier.
    pub load_average: f64,
}

impl Machine {
    pub fn read() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
        Self {
            cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            load_average: read("/proc/loadavg")
                .split_whitespace()
                .next()
                .and_then(|l| l.parse().ok())
                .unwrap_or(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(cpu_seconds(stat), Some(3.0));
        let status = "Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t   1024 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(status_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn reads_this_process() {
        if cfg!(target_os = "linux") {
            let s = sample(std::process::id()).expect("/proc/self");
            assert!(s.rss_kib > 0 && s.peak_rss_kib >= s.rss_kib, "{s:?}");
        }
    }
}
