//! `orch stop|start|restart AGENT` when no supervisor runs: act on the pane directly.
//! (With a supervisor, the CLI asks it instead, so a human's restart is not counted as a
//! crash and a stop is not undone by the restart policy.)

use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::BadInput;
use crate::layout::{Agent, Layout};
use crate::state::StateDir;
use crate::tmux::{Pane, Tmux};

/// Grace between the polite signal and SIGKILL for a single agent.
pub const AGENT_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Stopped { killed: bool },
    AlreadyStopped,
    Started { pid: u32 },
    AlreadyRunning,
}

fn find<'a>(layout: &'a Layout, name: &str) -> Result<&'a Agent> {
    layout
        .agents
        .iter()
        .find(|a| a.name.as_str() == name)
        .ok_or_else(|| BadInput(unknown_agent(name, layout)).into())
}

/// The error for an agent the layout does not name, listing the ones it does.
pub(crate) fn unknown_agent(name: &str, layout: &Layout) -> String {
    let names: Vec<&str> = layout.agents.iter().map(|a| a.name.as_str()).collect();
    format!(
        "unknown agent {name}; session {} has {}",
        layout.session,
        names.join(", ")
    )
}

fn pane_of(layout: &Layout, tmux: &Tmux, name: &str) -> Result<Option<Pane>> {
    let panes = tmux.list_panes().context("listing panes")?;
    Ok(panes
        .into_iter()
        .find(|p| p.session == layout.session.as_str() && p.agent.as_deref() == Some(name)))
}

pub fn stop(layout: &Layout, tmux: &Tmux, name: &str) -> Result<Outcome> {
    find(layout, name)?;
    match pane_of(layout, tmux, name)? {
        Some(p) if !p.dead => {
            let killed = super::stop_panes(layout, &[&p], AGENT_GRACE)?;
            Ok(Outcome::Stopped {
                killed: !killed.is_empty(),
            })
        }
        _ => Ok(Outcome::AlreadyStopped),
    }
}

pub fn start(layout: &Layout, tmux: &Tmux, state: &StateDir, name: &str) -> Result<Outcome> {
    let agent = find(layout, name)?;
    match pane_of(layout, tmux, name)? {
        Some(p) if !p.dead => Ok(Outcome::AlreadyRunning),
        Some(p) => {
            let mut notes = Vec::new();
            let cwd = super::agent_cwd(layout, agent, state, &mut notes)?;
            let spec = super::pane_spec(layout, agent, &cwd, tmux, state);
            let pid = tmux.respawn_pane(&p.id, &spec)?;
            Ok(Outcome::Started { pid })
        }
        None => {
            super::up(layout, tmux, state)?;
            let p = pane_of(layout, tmux, name)?
                .with_context(|| format!("layout up made no pane for {name}"))?;
            Ok(Outcome::Started {
                pid: p.pid.unwrap_or(0),
            })
        }
    }
}
