//! CPU and memory of an agent's whole process tree (the pane's process and everything it
//! started), read with sysinfo in one pass over the process table.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// Usage of one process tree.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TreeUsage {
    /// Average CPU since the tree's root started (as `ps` reports it), in percent of one
    /// core: a one-shot reading has no earlier sample to take a difference from.
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    /// Seconds since the root process started.
    pub uptime_secs: u64,
}

/// One reading of the process table.
pub struct ProcessTable {
    sys: System,
    children: HashMap<Pid, Vec<Pid>>,
    /// Members of each session, by session leader.
    sessions: HashMap<Pid, Vec<Pid>>,
}

impl ProcessTable {
    /// Reads every process once: CPU times and memory, not threads (a thread's memory is
    /// its process's, and counting threads would multiply it).
    pub fn read() -> Result<Self> {
        let mut sys = System::new().context("reading the process table")?;
        sys.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing()
                .with_cpu()
                .with_memory()
                .without_tasks(),
        );
        let mut children: HashMap<Pid, Vec<Pid>> = HashMap::new();
        let mut sessions: HashMap<Pid, Vec<Pid>> = HashMap::new();
        for (pid, p) in sys.processes() {
            if p.thread_kind().is_some() {
                continue;
            }
            if let Some(parent) = p.parent() {
                children.entry(parent).or_default().push(*pid);
            }
            if let Some(sid) = p.session_id() {
                sessions.entry(sid).or_default().push(*pid);
            }
        }
        Ok(Self {
            sys,
            children,
            sessions,
        })
    }

    /// `root` and all its descendants, plus any process still in the session `root` leads
    /// (tmux makes each pane's process a session leader; a process whose parent died is
    /// re-parented away from the tree but stays in that session).
    pub fn tree(&self, root: u32) -> Vec<u32> {
        let root = Pid::from_u32(root);
        let mut seen: HashSet<Pid> = HashSet::new();
        let mut stack = vec![root];
        stack.extend(self.sessions.get(&root).into_iter().flatten());
        while let Some(pid) = stack.pop() {
            if self.sys.process(pid).is_none() || !seen.insert(pid) {
                continue;
            }
            if let Some(kids) = self.children.get(&pid) {
                stack.extend(kids);
            }
        }
        let mut pids: Vec<u32> = seen.into_iter().map(Pid::as_u32).collect();
        pids.sort_unstable();
        pids
    }

    /// Usage of the tree under `root`, or `None` if `root` is not running.
    pub fn usage(&self, root: u32) -> Option<TreeUsage> {
        let leader = self.sys.process(Pid::from_u32(root))?;
        let uptime_secs = leader.run_time();
        let (mut cpu_ms, mut rss) = (0u64, 0u64);
        for pid in self.tree(root) {
            if let Some(p) = self.sys.process(Pid::from_u32(pid)) {
                cpu_ms += p.accumulated_cpu_time();
                rss += p.memory();
            }
        }
        let cpu_percent = if uptime_secs == 0 {
            0.0
        } else {
            cpu_ms as f64 / (uptime_secs as f64 * 10.0)
        };
        Some(TreeUsage {
            cpu_percent,
            rss_bytes: rss,
            uptime_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_tree_includes_grandchildren_and_sums_their_memory() {
        // sh -> sleep (grandchild of this test process)
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        let root = child.id();
        let mut table = ProcessTable::read().expect("table");
        for _ in 0..100 {
            if table.tree(root).len() >= 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            table = ProcessTable::read().expect("table");
        }
        let tree = table.tree(root);
        assert!(tree.contains(&root));
        assert_eq!(tree.len(), 2, "sh and its sleep: {tree:?}");
        let usage = table.usage(root).expect("running");
        assert!(usage.rss_bytes > 0);
        if let Some(group) = rustix::process::Pid::from_raw(root as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
