//! CPU and memory of an agent's whole process tree (the pane's process and everything it
//! started), with sysinfo: a one-shot [`ProcessTable`] for commands, and a
//! [`ResourceSampler`] for the supervisor's resources tier.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// Usage of one process tree.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TreeUsage {
    /// Percent of one core: since the previous sample for a [`ResourceSampler`]; for a
    /// one-shot [`ProcessTable`], the average since the root started (as `ps` reports it),
    /// having no earlier sample to take a difference from.
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

/// The supervisor's resources tier: keeps one `System` between samples so CPU is the real
/// usage since the last sample, and refreshes only the processes of the agents' trees. The
/// whole process table is read only to discover the trees: at the first sample, when a
/// tree changed (a process ended, an agent restarted), and every [`RESCAN_EVERY`] to catch
/// new children.
pub struct ResourceSampler {
    sys: Option<System>,
    trees: HashMap<u32, Vec<u32>>,
    samples_since_scan: u32,
}

/// Samples between two reads of the whole process table.
pub const RESCAN_EVERY: u32 = 12;

impl Default for ResourceSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl ResourceSampler {
    pub fn new() -> Self {
        Self {
            sys: None,
            trees: HashMap::new(),
            samples_since_scan: 0,
        }
    }

    /// Usage of the tree under each root that is running.
    pub fn sample(&mut self, roots: &[u32]) -> Result<HashMap<u32, TreeUsage>> {
        let kind = ProcessRefreshKind::nothing()
            .with_cpu()
            .with_memory()
            .without_tasks();
        let known = roots.iter().all(|r| self.trees.contains_key(r));
        let sys = match self.sys.as_mut() {
            Some(sys) if known && self.samples_since_scan < RESCAN_EVERY => {
                let pids: Vec<Pid> = roots
                    .iter()
                    .flat_map(|r| self.trees.get(r).into_iter().flatten())
                    .map(|&p| Pid::from_u32(p))
                    .collect();
                sys.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, kind);
                self.samples_since_scan += 1;
                if pids.iter().any(|p| sys.process(*p).is_none()) {
                    self.samples_since_scan = RESCAN_EVERY; // a tree changed: rescan next time
                }
                sys
            }
            _ => {
                let table = ProcessTable::read()?;
                self.trees = roots.iter().map(|&r| (r, table.tree(r))).collect();
                self.samples_since_scan = 0;
                let sys = self.sys.insert(table.sys);
                // The first reading of a process has no CPU delta yet: refresh once more.
                let pids: Vec<Pid> = self
                    .trees
                    .values()
                    .flatten()
                    .map(|&p| Pid::from_u32(p))
                    .collect();
                sys.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, kind);
                sys
            }
        };
        let mut out = HashMap::new();
        for &root in roots {
            let Some(leader) = sys.process(Pid::from_u32(root)) else {
                continue;
            };
            let uptime_secs = leader.run_time();
            let (mut cpu, mut rss) = (0.0f64, 0u64);
            for &pid in self.trees.get(&root).into_iter().flatten() {
                if let Some(p) = sys.process(Pid::from_u32(pid)) {
                    cpu += f64::from(p.cpu_usage());
                    rss += p.memory();
                }
            }
            out.insert(
                root,
                TreeUsage {
                    cpu_percent: cpu,
                    rss_bytes: rss,
                    uptime_secs,
                },
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn the_sampler_measures_a_busy_tree_and_follows_it() {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("sh")
            .args(["-c", "while :; do :; done & sleep 30; wait"])
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        let root = child.id();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut sampler = ResourceSampler::new();
        sampler.sample(&[root]).expect("first sample");
        std::thread::sleep(std::time::Duration::from_millis(500));
        let usage = sampler.sample(&[root]).expect("sample")[&root];
        if let Some(group) = rustix::process::Pid::from_raw(root as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = child.wait();
        assert!(
            usage.cpu_percent > 30.0,
            "a busy loop in the tree: {usage:?}"
        );
        assert!(usage.rss_bytes > 0);
        assert!(sampler.sample(&[root]).expect("sample").is_empty(), "gone");
    }

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
