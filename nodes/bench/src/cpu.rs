//! CPU time of the processes a benchmark measures: utime + stime from `/proc/<pid>/stat`, which the
//! kernel sums over every thread of the process (live and exited), sampled before and after a phase.
//! The delta over the phase, divided by the phase's successful operations, is the process's CPU per
//! operation; divided by the phase's wall time, the cores it used.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`), as the system says; 100 when it does not.
fn clock_ticks_per_second() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as u64,
        _ => 100,
    }
}

/// User and system CPU time, in clock ticks, from the text of `/proc/<pid>/stat`.
///
/// The second field (the command name) is in parentheses and may itself hold spaces and parentheses, so
/// the fields are counted from the last `)`: utime and stime are the 14th and 15th fields of the line.
pub fn parse_stat(text: &str) -> Result<(u64, u64)> {
    let close = text.rfind(')').ok_or_else(|| anyhow!("no `)` after the command name"))?;
    // After `)`: field 3 (state) onward; utime is field 14, so the 12th of these.
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        let text = fields.get(n - 3).ok_or_else(|| anyhow!("only {} fields after the command name", fields.len()))?;
        text.parse().with_context(|| format!("field {n} is {text:?}, not a tick count"))
    };
    Ok((field(14)?, field(15)?))
}

/// The CPU time process `pid` has used so far, all threads, user and system.
pub fn process_cpu(pid: i32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let (utime, stime) = parse_stat(&text).with_context(|| format!("parse {path}"))?;
    Ok(ticks_to_duration(utime + stime, clock_ticks_per_second()))
}

fn ticks_to_duration(ticks: u64, per_second: u64) -> Duration {
    Duration::from_secs(ticks / per_second) + Duration::from_nanos((ticks % per_second) * 1_000_000_000 / per_second)
}

/// A process to watch: its name in the report (`node-2`, `gateway-1`, `single node`) and its pid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    pub name: String,
    pub pid: i32,
}

impl Watched {
    pub fn new(name: impl Into<String>, pid: i32) -> Self {
        Self { name: name.into(), pid }
    }
}

/// Every watched process's CPU time at one instant.
#[derive(Clone, Debug)]
pub struct Sample {
    at: Instant,
    cpu: Vec<(Watched, Option<Duration>)>,
}

impl Sample {
    /// Reads every process's CPU time now; one that cannot be read (it exited) is kept as unknown.
    pub fn take(watched: &[Watched]) -> Self {
        let cpu = watched.iter().map(|w| (w.clone(), process_cpu(w.pid).ok())).collect();
        Self { at: Instant::now(), cpu }
    }

    /// What each process used from `self` to `later`, over `ops` successful operations.
    pub fn until(&self, later: &Sample, ops: u64) -> Cpu {
        let wall = later.at.saturating_duration_since(self.at);
        let used = self.cpu.iter().map(|(w, before)| {
            let after = later.cpu.iter().find(|(l, _)| l == w).and_then(|(_, cpu)| *cpu);
            (w.name.clone(), before.zip(after).map(|(b, a)| a.saturating_sub(b)))
        });
        Cpu::new(used.collect(), wall, ops)
    }
}

/// One process's CPU over a phase.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProcessCpu {
    pub name: String,
    /// CPU time used over the phase, in milliseconds; `None` when the process could not be read at both
    /// ends (it exited or was restarted).
    pub cpu_ms: Option<f64>,
    /// CPU per successful operation, in microseconds.
    pub us_per_op: Option<f64>,
    /// Cores it kept busy on average: CPU time over wall time.
    pub cores: Option<f64>,
}

/// Every watched process's CPU over a phase, and their sum.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Cpu {
    pub wall_s: f64,
    pub ops: u64,
    pub processes: Vec<ProcessCpu>,
    /// Over every process; `None` when one of them could not be read.
    pub total_cpu_ms: Option<f64>,
    pub total_us_per_op: Option<f64>,
    pub total_cores: Option<f64>,
}

impl Cpu {
    /// The arithmetic: per process and in total, CPU per operation (µs) and cores (CPU / wall).
    pub fn new(used: Vec<(String, Option<Duration>)>, wall: Duration, ops: u64) -> Self {
        let wall_s = wall.as_secs_f64();
        let per_op = |cpu: Duration| (ops > 0).then(|| cpu.as_secs_f64() * 1e6 / ops as f64);
        let cores = |cpu: Duration| (wall_s > 0.0).then(|| cpu.as_secs_f64() / wall_s);
        let processes = used
            .iter()
            .map(|(name, cpu)| ProcessCpu {
                name: name.clone(),
                cpu_ms: cpu.map(|c| c.as_secs_f64() * 1e3),
                us_per_op: cpu.and_then(per_op),
                cores: cpu.and_then(cores),
            })
            .collect();
        let total: Option<Duration> = used.iter().map(|(_, cpu)| *cpu).sum();
        Self {
            wall_s,
            ops,
            processes,
            total_cpu_ms: total.map(|c| c.as_secs_f64() * 1e3),
            total_us_per_op: total.and_then(per_op),
            total_cores: total.and_then(cores),
        }
    }

    /// The process named `name`.
    pub fn process(&self, name: &str) -> Option<&ProcessCpu> {
        self.processes.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_give_utime_and_stime() {
        let line = "4242 (playground) S 1 4242 4242 0 -1 4194560 2051 0 0 0 1234 567 0 0 20 0 9 0 8301 \
                    1092587520 6209 18446744073709551615 1 1 0 0 0 0 0 4096 17479 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(parse_stat(line).unwrap(), (1234, 567));
        // A command name with spaces and parentheses does not shift the fields.
        let odd = "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 10 20 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_stat(odd).unwrap(), (10, 20));
        assert!(parse_stat("7 (short) R 1 2").is_err());
        assert!(parse_stat("no parenthesis at all").is_err());
        assert!(parse_stat("7 (x) R 1 7 7 0 -1 0 0 0 0 0 ten 20").is_err());
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let spin: u64 = (0..2_000_000u64).fold(0, |a, b| a.wrapping_add(b * b));
        assert!(spin > 0);
        assert!(process_cpu(pid).is_ok());
        assert!(process_cpu(i32::MAX).is_err());
    }

    #[test]
    fn ticks_become_durations() {
        assert_eq!(ticks_to_duration(250, 100), Duration::from_millis(2500));
        assert_eq!(ticks_to_duration(1, 100), Duration::from_millis(10));
        assert_eq!(ticks_to_duration(3, 1000), Duration::from_millis(3));
    }

    #[test]
    fn cpu_per_operation_and_cores_per_process_and_in_total() {
        let ms = Duration::from_millis;
        let used = vec![("node-1".to_owned(), Some(ms(500))), ("gateway-1".to_owned(), Some(ms(1500)))];
        let cpu = Cpu::new(used, Duration::from_secs(5), 10_000);
        assert_eq!(cpu.process("node-1").unwrap().us_per_op, Some(50.0));
        assert_eq!(cpu.process("gateway-1").unwrap().cores, Some(0.3));
        assert_eq!(cpu.total_cpu_ms, Some(2000.0));
        assert_eq!(cpu.total_us_per_op, Some(200.0));
        assert_eq!(cpu.total_cores, Some(0.4));
        // No operations: cores still, but no CPU per operation.
        let idle = Cpu::new(vec![("node-1".to_owned(), Some(ms(100)))], Duration::from_secs(10), 0);
        assert_eq!((idle.total_us_per_op, idle.total_cores), (None, Some(0.01)));
        // A process that could not be read makes the total unknown, not smaller.
        let gone = Cpu::new(vec![("a".into(), Some(ms(1))), ("b".into(), None)], Duration::from_secs(1), 1);
        assert_eq!((gone.total_cpu_ms, gone.processes[1].us_per_op), (None, None));
        assert!(gone.process("c").is_none());
    }

    #[test]
    fn samples_pair_processes_by_name_and_pid() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let watched = [Watched::new("me", pid), Watched::new("nobody", i32::MAX)];
        let before = Sample::take(&watched);
        let after = Sample::take(&watched);
        let cpu = before.until(&after, 1);
        assert!(cpu.process("me").unwrap().cpu_ms.is_some());
        assert_eq!(cpu.process("nobody").unwrap().cpu_ms, None);
        assert_eq!(cpu.total_cpu_ms, None);
    }
}
