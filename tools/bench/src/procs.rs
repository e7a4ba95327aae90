//! Process memory from `/proc` (Linux): the function processes are grandchildren of this one
//! (this process → runtime emulator → bootstrap).

use std::fs;
use std::path::PathBuf;

/// A running process.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    /// The executable's path (`/proc/<pid>/exe`).
    pub exe: PathBuf,
}

impl Proc {
    /// Peak resident set size (`VmHWM`) in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        status_field(self.pid, "VmHWM:")
    }

    /// Current resident set size (`VmRSS`) in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        status_field(self.pid, "VmRSS:")
    }

    /// The current and the peak resident set size in KiB, from one read of `status`: the kernel
    /// updates the recorded peak lazily, so a peak read after memory was freed can be below a
    /// size read before; within one read the peak is at least the size.
    pub fn rss_and_peak_kib(&self) -> Option<(u64, u64)> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        Some((field(&status, "VmRSS:")?, field(&status, "VmHWM:")?))
    }
}

fn status_field(pid: u32, name: &str) -> Option<u64> {
    field(
        &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        name,
    )
}

fn field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces; ppid follows it.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Every process, as far as `/proc` shows it.
pub fn all() -> Vec<Proc> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            Some(Proc {
                pid,
                ppid: parent_of(pid)?,
                exe: fs::read_link(format!("/proc/{pid}/exe")).ok()?,
            })
        })
        .collect()
}

/// Descendants of `root` (children, their children, …).
pub fn descendants(root: u32) -> Vec<Proc> {
    let every = all();
    let mut found: Vec<Proc> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for proc in every.iter().filter(|p| p.ppid == parent) {
            frontier.push(proc.pid);
            found.push(proc.clone());
        }
    }
    found
}

/// Descendants of this process running the executable named `name`.
pub fn own_processes_named(name: &str) -> Vec<Proc> {
    descendants(std::process::id())
        .into_iter()
        .filter(|p| p.exe.file_name().is_some_and(|f| f == name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reports_a_nonzero_peak_rss() {
        let me = Proc {
            pid: std::process::id(),
            ppid: 0,
            exe: PathBuf::new(),
        };
        assert!(me.peak_rss_kib().is_some_and(|kib| kib > 0));
        let (now, peak) = me.rss_and_peak_kib().expect("VmRSS and VmHWM");
        assert!(now > 0);
        assert!(peak >= now, "peak {peak} < current {now}");
    }

    #[test]
    fn a_spawned_child_is_found_among_descendants() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let found = descendants(std::process::id())
            .into_iter()
            .any(|p| p.pid == child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found);
    }
}
