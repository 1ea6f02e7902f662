//! CPU caps for the scale-out benchmark: one cgroup v1 `cpu` group per node process, each with the same
//! CFS quota, so that a 3-node and a 6-node cluster get the same CPU per node whatever else the machine
//! runs. A guard removes its group on drop (moving anything still in it back to the root group first),
//! on success and on error alike.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Where cgroup v1 mounts the `cpu` controller.
pub const CPU_ROOT: &str = "/sys/fs/cgroup/cpu";
/// The CFS period every group uses; the quota is this times the cores a node may use.
pub const PERIOD_US: u64 = 100_000;
/// The kernel's smallest quota.
const MIN_QUOTA_US: u64 = 1_000;

/// The group's folder for member `member` of this run: `<root>/playground-bench-<run>-<member>`. The
/// member name must be a plain name (`node-3`), never a path.
pub fn group_path(root: &Path, run: &str, member: &str) -> Result<PathBuf> {
    let plain = |s: &str| {
        !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') && !s.starts_with('-')
    };
    if !plain(run) || !plain(member) {
        bail!("cgroup names are made of letters, digits, `-` and `_`: {run:?}, {member:?}");
    }
    Ok(root.join(format!("playground-bench-{run}-{member}")))
}

/// The run (the bench's pid) a group folder named by [`group_path`] belongs to.
fn run_of(folder: &str) -> Option<i32> {
    folder.strip_prefix("playground-bench-")?.split('-').next()?.parse().ok()
}

/// Removes the groups under `root` of earlier runs whose bench process is gone (a run killed by a signal
/// cannot remove its own), moving anything still in them back to the root group; says how many it removed.
pub fn remove_stale(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(run) = run_of(&name) else { continue };
        if Path::new(&format!("/proc/{run}")).exists() {
            continue;
        }
        let procs = std::fs::read_to_string(entry.path().join("cgroup.procs")).unwrap_or_default();
        for pid in parse_pids(&procs) {
            let _ = std::fs::write(root.join("cgroup.procs"), pid.to_string());
        }
        if std::fs::remove_dir(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The quota in microseconds per [`PERIOD_US`] for `cores` (0.2 → 20 000).
pub fn quota_us(cores: f64) -> Result<u64> {
    if !cores.is_finite() || cores <= 0.0 {
        bail!("a CPU quota is a positive number of cores, not {cores}");
    }
    let quota = (cores * PERIOD_US as f64).round() as u64;
    if quota < MIN_QUOTA_US {
        bail!("{cores} cores is below the kernel's smallest quota ({MIN_QUOTA_US} µs per {PERIOD_US} µs)");
    }
    Ok(quota)
}

/// Pids in the text of a `cgroup.procs` or `tasks` file.
pub fn parse_pids(text: &str) -> Vec<i32> {
    text.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// One `cpu` group holding one process, removed on drop.
pub struct CpuGroup {
    path: PathBuf,
    root: PathBuf,
    pub member: String,
}

impl CpuGroup {
    /// Creates the group of `member` under `root`, sets its quota to `cores`, and moves process `pid`
    /// into it: writing the pid to `cgroup.procs` moves every one of its threads, and threads it starts
    /// later are born in the group.
    pub fn cap(root: &Path, run: &str, member: &str, pid: i32, cores: f64) -> Result<Self> {
        let path = group_path(root, run, member)?;
        let quota_us = quota_us(cores)?;
        std::fs::create_dir(&path).with_context(|| format!("create the cgroup {}", path.display()))?;
        // From here on the guard owns the folder, so an error below removes it.
        let group = Self { path, root: root.to_owned(), member: member.to_owned() };
        group.write("cpu.cfs_period_us", &PERIOD_US.to_string())?;
        group.write("cpu.cfs_quota_us", &quota_us.to_string())?;
        group.write("cgroup.procs", &pid.to_string())?;
        let held = parse_pids(&std::fs::read_to_string(group.path.join("cgroup.procs")).unwrap_or_default());
        if !held.contains(&pid) {
            bail!("{} does not hold pid {pid} after writing it to cgroup.procs", group.path.display());
        }
        Ok(group)
    }

    fn write(&self, file: &str, value: &str) -> Result<()> {
        let path = self.path.join(file);
        std::fs::write(&path, value).with_context(|| format!("write {value} to {}", path.display()))
    }

    /// CPU time the group was denied for: (periods throttled, total throttled time in ms), from `cpu.stat`.
    pub fn throttled(&self) -> Option<(u64, f64)> {
        parse_throttled(&std::fs::read_to_string(self.path.join("cpu.stat")).ok()?)
    }
}

/// `nr_throttled` and `throttled_time` (ns, shown in ms) from the text of `cpu.stat`.
pub fn parse_throttled(text: &str) -> Option<(u64, f64)> {
    let value =
        |key: &str| text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse::<u64>().ok());
    Some((value("nr_throttled")?, value("throttled_time")? as f64 / 1e6))
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        // A group with processes in it cannot be removed: whatever still runs goes back to the root group.
        let procs = std::fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default();
        for pid in parse_pids(&procs) {
            let _ = std::fs::write(self.root.join("cgroup.procs"), pid.to_string());
        }
        if let Err(e) = std::fs::remove_dir(&self.path) {
            eprintln!("bench: could not remove the cgroup {}: {e}", self.path.display());
        }
    }
}

/// Whether this process may create groups under `root`: says why not in one line when it may not.
pub fn check_writable(root: &Path) -> Result<()> {
    let probe = group_path(root, &format!("probe{}", std::process::id()), "check")?;
    std::fs::create_dir(&probe).with_context(|| {
        format!("cannot create a cgroup under {} (cgroup v1 `cpu` mounted there and root needed)", root.display())
    })?;
    let quota = std::fs::write(probe.join("cpu.cfs_quota_us"), "-1");
    let _ = std::fs::remove_dir(&probe);
    quota.with_context(|| format!("cannot write cpu.cfs_quota_us of a cgroup under {}", root.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_named_per_run_and_member_and_never_leave_the_root() {
        let root = Path::new(CPU_ROOT);
        assert_eq!(
            group_path(root, "4242", "node-3").unwrap(),
            PathBuf::from("/sys/fs/cgroup/cpu/playground-bench-4242-node-3")
        );
        assert!(group_path(root, "4242", "../escape").is_err());
        assert!(group_path(root, "4242", "a/b").is_err());
        assert!(group_path(root, "", "node-1").is_err());
        assert!(group_path(root, "1", "").is_err());
        assert!(group_path(root, "1", "-rf").is_err());
        assert_eq!(run_of("playground-bench-4242-node-3"), Some(4242));
        assert_eq!(run_of("playground-bench-probe77-check"), None);
        assert_eq!(run_of("docker"), None);
    }

    #[test]
    fn quotas_are_cores_times_the_period() {
        assert_eq!(quota_us(0.2).unwrap(), 20_000);
        assert_eq!(quota_us(1.0).unwrap(), 100_000);
        assert_eq!(quota_us(1.5).unwrap(), 150_000);
        assert!(quota_us(0.0).is_err());
        assert!(quota_us(-1.0).is_err());
        assert!(quota_us(f64::NAN).is_err());
        assert!(quota_us(0.001).is_err(), "below the kernel's minimum");
    }

    #[test]
    fn pid_lists_and_throttling_are_read() {
        assert_eq!(parse_pids("12\n345\n\n"), vec![12, 345]);
        assert!(parse_pids("").is_empty());
        let stat = "nr_periods 500\nnr_throttled 42\nthrottled_time 1500000000\n";
        assert_eq!(parse_throttled(stat), Some((42, 1500.0)));
        assert_eq!(parse_throttled("nr_periods 1\n"), None);
    }

    #[test]
    fn a_group_in_a_plain_folder_is_created_and_removed() {
        // A plain folder stands in for the cgroup mount: the files are written, and the guard removes the
        // folder when it is empty again. (The real mount refuses the folder's leftover files; here the
        // test empties it.)
        let root = tempfile::tempdir().unwrap();
        let group = CpuGroup::cap(root.path(), "t1", "node-1", 77, 0.25).unwrap();
        let dir = group_path(root.path(), "t1", "node-1").unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("cpu.cfs_quota_us")).unwrap(), "25000");
        assert_eq!(std::fs::read_to_string(dir.join("cpu.cfs_period_us")).unwrap(), "100000");
        assert_eq!(std::fs::read_to_string(dir.join("cgroup.procs")).unwrap(), "77");
        for file in ["cpu.cfs_quota_us", "cpu.cfs_period_us", "cgroup.procs"] {
            std::fs::remove_file(dir.join(file)).unwrap();
        }
        drop(group);
        assert!(!dir.exists());
        assert!(CpuGroup::cap(root.path(), "t1", "../x", 77, 0.25).is_err());
    }
}
