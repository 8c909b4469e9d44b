//! The fault schedule: which fault is due when, without I/O. Each fault
//! comes every `every` from the start of the load (the first at `every`,
//! not at 0); a fault whose time passed while the driver was busy (a node
//! restarting) comes once, late, not once per interval missed.

use std::fmt;
use std::time::Duration;

/// A fault chaos injects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL of a random worker process.
    KillWorker,
    /// SIGSTOP of a random worker process; SIGKILL once the node's
    /// liveness has passed (the node should have given its messages to
    /// others by then).
    StopWorker,
    /// SIGKILL of the node and its workers at once; the node restarted on
    /// the same data directory and endpoints.
    KillNode,
    /// The client stops reading its subscription for a while.
    SlowSubscriber,
    /// The client's sockets closed and made again.
    DropConnection,
    /// The user's command, run with `sh -c`.
    Command(String),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KillWorker => f.write_str("--kill-worker"),
            Self::StopWorker => f.write_str("--stop-worker"),
            Self::KillNode => f.write_str("--kill-node"),
            Self::SlowSubscriber => f.write_str("--slow-subscriber"),
            Self::DropConnection => f.write_str("--drop-connection"),
            Self::Command(c) => write!(f, "--fault-command {c:?}"),
        }
    }
}

/// A fault and its interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub fault: Fault,
    pub every: Duration,
}

/// `--fault-command EVERY:COMMAND`: `5s:systemctl restart db`.
pub fn parse_command(text: &str) -> Result<Planned, String> {
    let (every, command) = text
        .split_once(':')
        .ok_or_else(|| format!("--fault-command {text:?}: write EVERY:COMMAND, as 5s:cmd"))?;
    let every = zmanager::node::duration::parse(every.trim())
        .map_err(|e| format!("--fault-command {text:?}: {e}"))?;
    if command.trim().is_empty() {
        return Err(format!("--fault-command {text:?}: no command"));
    }
    Ok(Planned {
        fault: Fault::Command(command.trim().to_owned()),
        every,
    })
}

/// When each planned fault comes next.
#[derive(Debug, Clone)]
pub struct Schedule {
    next: Vec<(Planned, Duration)>,
}

impl Schedule {
    pub fn new(planned: &[Planned]) -> Self {
        Self {
            next: planned.iter().map(|p| (p.clone(), p.every)).collect(),
        }
    }

    /// The faults due at `elapsed` since the load started, each once, in
    /// the order planned.
    pub fn due(&mut self, elapsed: Duration) -> Vec<Fault> {
        let mut due = Vec::new();
        for (planned, next) in &mut self.next {
            if planned.every.is_zero() || *next > elapsed {
                continue;
            }
            due.push(planned.fault.clone());
            while *next <= elapsed {
                *next += planned.every;
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn each_fault_comes_on_its_interval_and_once_when_late() {
        let mut s = Schedule::new(&[
            Planned {
                fault: Fault::KillWorker,
                every: ms(100),
            },
            Planned {
                fault: Fault::KillNode,
                every: ms(250),
            },
        ]);
        assert!(s.due(ms(0)).is_empty(), "nothing at the start");
        assert!(s.due(ms(99)).is_empty());
        assert_eq!(s.due(ms(100)), [Fault::KillWorker]);
        assert!(s.due(ms(150)).is_empty());
        assert_eq!(s.due(ms(260)), [Fault::KillWorker, Fault::KillNode]);
        // Busy from 260 to 900 ms: one kill, not six.
        assert_eq!(s.due(ms(900)), [Fault::KillWorker, Fault::KillNode]);
        assert!(s.due(ms(950)).is_empty());
        assert_eq!(s.due(ms(1000)), [Fault::KillWorker, Fault::KillNode]);
    }

    #[test]
    fn fault_commands_parse() {
        let p = parse_command("5s: pkill -STOP mydb ").unwrap();
        assert_eq!(p.every, Duration::from_secs(5));
        assert_eq!(p.fault, Fault::Command("pkill -STOP mydb".into()));
        assert!(parse_command("nonsense").is_err());
        assert!(parse_command("5s:").is_err());
        assert!(parse_command("soon:ls").is_err());
    }
}
