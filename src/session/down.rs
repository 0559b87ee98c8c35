//! `orch layout down`: stop every agent gracefully, then remove the session.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::layout::{Layout, StopSignal};
use crate::monitor::resources::ProcessTable;
use crate::process::{Sig, alive, signal};
use crate::tmux::{Pane, Tmux};

/// How often to look whether the stopped processes are gone.
const POLL: Duration = Duration::from_millis(25);

#[derive(Debug, Default)]
pub struct DownReport {
    pub was_running: bool,
    /// Panes whose processes were asked to stop.
    pub panes: usize,
    /// Agents (or pane ids, for panes orch did not make) that had to be killed.
    pub killed: Vec<String>,
}

/// Sends each pane's process tree its polite stop signal (the profile's: SIGTERM, or
/// SIGHUP for a shell), waits up to `grace` for all of them to end, SIGKILLs what is left,
/// then kills the session.
pub fn down(layout: &Layout, tmux: &Tmux, grace: Duration) -> Result<DownReport> {
    let session = layout.session.as_str();
    let panes = tmux.list_panes().context("asking tmux which panes exist")?;
    let panes: Vec<_> = panes.into_iter().filter(|p| p.session == session).collect();
    if panes.is_empty() {
        return Ok(DownReport::default());
    }
    let live: Vec<&Pane> = panes.iter().filter(|p| !p.dead).collect();
    let killed = stop_panes(layout, &live, grace)?;
    tmux.kill_session(session)
        .with_context(|| format!("killing tmux session {session}"))?;
    tracing::info!(session, panes = live.len(), killed = ?killed, "layout down");
    Ok(DownReport {
        was_running: true,
        panes: live.len(),
        killed,
    })
}

/// Stops the process trees of `panes`: the polite signal (the agent profile's; SIGHUP,
/// like a closing terminal, for panes orch did not make), up to `grace` for them to end,
/// then SIGKILL. Returns the agents (or pane ids) that had to be killed.
pub(crate) fn stop_panes(layout: &Layout, panes: &[&Pane], grace: Duration) -> Result<Vec<String>> {
    let table = ProcessTable::read()?;
    // (label, pids) per pane.
    let mut groups: Vec<(String, Vec<u32>)> = Vec::new();
    for pane in panes {
        let Some(pid) = pane.pid else { continue };
        let agent = pane
            .agent
            .as_deref()
            .and_then(|name| layout.agents.iter().find(|a| a.name.as_str() == name));
        let stop = agent.map_or(StopSignal::Hangup, |a| a.profile.stop_signal());
        let pids = table.tree(pid);
        for &p in &pids {
            signal(p, Sig::Stop(stop));
        }
        groups.push((pane.agent.clone().unwrap_or_else(|| pane.id.clone()), pids));
    }
    let any_alive = |groups: &[(String, Vec<u32>)]| {
        groups
            .iter()
            .any(|(_, pids)| pids.iter().any(|&p| alive(p)))
    };
    let deadline = Instant::now() + grace;
    while any_alive(&groups) && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    let mut killed = BTreeSet::new();
    for (label, pids) in &groups {
        for &p in pids.iter().filter(|&&p| alive(p)) {
            signal(p, Sig::Kill);
            killed.insert(label.clone());
        }
    }
    let kill_deadline = Instant::now() + Duration::from_secs(2);
    while any_alive(&groups) && Instant::now() < kill_deadline {
        std::thread::sleep(POLL);
    }
    Ok(killed.into_iter().collect())
}
