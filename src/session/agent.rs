//! `orch stop|start|restart AGENT` (and the dashboard's `r`/`s`): [`control`] asks the
//! session's supervisor when one runs, so a human's restart is not counted as a crash and
//! a stop is not undone by the restart policy; without one it acts on the pane directly.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::error::BadInput;
use crate::layout::{Agent, Layout};
use crate::state::StateDir;
use crate::tmux::{Pane, Tmux};

/// Grace between the polite signal and SIGKILL for a single agent.
pub const AGENT_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Stopped {
        killed: bool,
    },
    AlreadyStopped,
    Started {
        pid: u32,
    },
    AlreadyRunning,
    /// The running supervisor took the request.
    HandedToSupervisor,
}

/// What a human asks of one agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Restart,
    Stop,
    Start,
}

impl Action {
    pub fn verb(self) -> &'static str {
        match self {
            Action::Restart => "restart",
            Action::Stop => "stop",
            Action::Start => "start",
        }
    }
}

/// What became of `action` on `name`, in one line.
pub fn describe(name: &str, action: Action, outcome: &Outcome) -> String {
    match outcome {
        Outcome::HandedToSupervisor => {
            format!("{name}: {} handed to the supervisor", action.verb())
        }
        Outcome::Stopped { killed: false } => format!("{name}: stopped"),
        Outcome::Stopped { killed: true } => {
            format!("{name}: stopped (killed after {}s)", AGENT_GRACE.as_secs())
        }
        Outcome::AlreadyStopped => format!("{name}: not running"),
        Outcome::Started { pid } => format!("{name}: running (pid {pid})"),
        Outcome::AlreadyRunning => format!("{name}: already running"),
    }
}

/// Restarts, stops or starts `name`: through the session's supervisor if one runs (a
/// refusal of its is bad input), directly on its pane otherwise.
pub fn control(
    layout: &Layout,
    tmux: &Tmux,
    state: &StateDir,
    action: Action,
    name: &str,
) -> Result<Outcome> {
    use crate::supervisor::control::{Request, request};
    let dir = state.session_dir(layout.session.as_str())?;
    let agent = name.to_owned();
    let req = match action {
        Action::Restart => Request::Restart { agent },
        Action::Stop => Request::Stop { agent },
        Action::Start => Request::Start { agent },
    };
    if let Some(reply) = request(&dir, &req)? {
        if !reply.ok {
            return Err(BadInput(
                reply
                    .error
                    .unwrap_or_else(|| "the supervisor refused".into()),
            )
            .into());
        }
        return Ok(Outcome::HandedToSupervisor);
    }
    match action {
        Action::Stop => stop(layout, tmux, name),
        Action::Start => start(layout, tmux, state, name),
        Action::Restart => {
            stop(layout, tmux, name)?;
            start(layout, tmux, state, name)
        }
    }
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
