//! `orch layout up`: create what is missing, touch nothing that exists.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::layout::{Agent, Layout};
use crate::state::StateDir;
use crate::tmux::{PaneSpec, PanesTarget, Tmux};

use super::agent_panes;

/// Size of a new detached session's window; a client that attaches resizes it.
const NEW_SESSION_SIZE: (u16, u16) = (240, 60);

/// What `up` has to do, decided from the layout and the panes tmux reports.
#[derive(Debug, PartialEq, Eq)]
pub struct UpPlan {
    pub target: UpTarget,
    /// Indexes into `layout.agents` of the agents that have no pane.
    pub missing: Vec<usize>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum UpTarget {
    NewSession,
    NewWindow,
    /// Add panes to this window (id `@N`).
    Window(String),
}

/// Decides what `up` creates. Agents are matched to panes by `@orch_agent`, in any window
/// of the session; missing agents go to the window that already holds the session's agent
/// panes, else to the window named in the layout, else to a new one.
pub fn plan_up(layout: &Layout, panes: &[crate::tmux::Pane]) -> UpPlan {
    let session = layout.session.as_str();
    let existing: Vec<&crate::tmux::Pane> = agent_panes(panes, session).collect();
    let missing = layout
        .agents
        .iter()
        .enumerate()
        .filter(|(_, a)| {
            !existing
                .iter()
                .any(|p| p.agent.as_deref() == Some(a.name.as_str()))
        })
        .map(|(i, _)| i)
        .collect();
    let target = if !panes.iter().any(|p| p.session == session) {
        UpTarget::NewSession
    } else if let Some(p) = existing.first() {
        UpTarget::Window(p.window_id.clone())
    } else if let Some(p) = panes
        .iter()
        .find(|p| p.session == session && p.window_name == layout.window.as_str())
    {
        UpTarget::Window(p.window_id.clone())
    } else {
        UpTarget::NewWindow
    };
    UpPlan { target, missing }
}

/// What `up` did.
#[derive(Debug)]
pub struct UpReport {
    /// Agents whose panes were created, with their new pane ids.
    pub created: Vec<(String, String)>,
    /// Agents that already had a pane.
    pub existing: usize,
    /// Notes for the user (worktrees made, files that could not be copied).
    pub notes: Vec<String>,
}

/// Brings the session up: creates the session, window and panes that are missing.
pub fn up(layout: &Layout, tmux: &Tmux, state: &StateDir) -> Result<UpReport> {
    let panes = tmux.list_panes().context("asking tmux which panes exist")?;
    let plan = plan_up(layout, &panes);
    let mut notes = Vec::new();
    if plan.missing.is_empty() {
        return Ok(UpReport {
            created: Vec::new(),
            existing: layout.agents.len(),
            notes,
        });
    }
    let session = layout.session.as_str();
    // Refused before anything is made for them (state folders, transcripts, worktrees).
    if let UpTarget::NewSession = plan.target {
        let (width, height) = NEW_SESSION_SIZE;
        let room = pane_room(width, height);
        if plan.missing.len() > room {
            return Err(crate::cli::BadInput(format!(
                "session {session}: {} agents do not fit in one {width}x{height} tmux window (at most about {room} panes); split them over several sessions",
                plan.missing.len()
            ))
            .into());
        }
    }
    state.session_dir(session)?;

    let mut cwds: Vec<PathBuf> = Vec::with_capacity(plan.missing.len());
    for &i in &plan.missing {
        let agent = &layout.agents[i];
        cwds.push(agent_cwd(layout, agent, state, &mut notes)?);
    }

    let specs: Vec<PaneSpec<'_>> = plan
        .missing
        .iter()
        .zip(&cwds)
        .map(|(&i, cwd)| pane_spec(layout, &layout.agents[i], cwd, tmux, state))
        .collect();

    let history_limit = layout.snapshot.scrollback_lines;
    let window = layout.window.as_str();
    let target = match &plan.target {
        UpTarget::NewSession => PanesTarget::NewSession {
            session,
            window,
            history_limit,
            width: NEW_SESSION_SIZE.0,
            height: NEW_SESSION_SIZE.1,
        },
        UpTarget::NewWindow => PanesTarget::NewWindow {
            session,
            window,
            history_limit,
        },
        UpTarget::Window(id) => PanesTarget::Window { id },
    };
    let ids = match tmux.create_panes(target, layout.arrange.tmux_name(), &specs) {
        Ok(ids) => ids,
        Err(e) => {
            // Nothing half-made is left behind: what this call created goes again.
            let names: Vec<&str> = specs.iter().map(|s| s.agent).collect();
            undo_up(tmux, session, &plan.target, &names);
            let hint = if e.to_string().contains("no space for new pane") {
                format!(
                    "; the window has no room for {} more panes: use fewer agents in this session",
                    specs.len()
                )
            } else {
                String::new()
            };
            return Err(anyhow::Error::from(e)
                .context(format!("creating the panes of session {session}{hint}")));
        }
    };
    let created = specs
        .iter()
        .zip(ids)
        .map(|(s, id)| (s.agent.to_owned(), id))
        .collect();
    tracing::info!(session, created = ?created, "layout up");
    Ok(UpReport {
        created,
        existing: layout.agents.len() - plan.missing.len(),
        notes,
    })
}

/// About how many panes a `width`x`height` window holds: each needs a column and a
/// border, a row, its border and its title line (`pane-border-status top`). tmux may
/// run out of room earlier (it splits the active pane in two); [`undo_up`] cleans up then.
fn pane_room(width: u16, height: u16) -> usize {
    usize::from(width).div_ceil(2) * usize::from(height).div_ceil(3)
}

/// Removes what a failed `up` created: the whole session if it made it, else the panes
/// of the agents it was creating (a window it made goes with its last pane).
fn undo_up(tmux: &Tmux, session: &str, target: &UpTarget, agents: &[&str]) {
    let result = match target {
        UpTarget::NewSession => tmux.kill_session(session),
        UpTarget::NewWindow | UpTarget::Window(_) => tmux.list_panes().and_then(|panes| {
            let made: Vec<&str> = panes
                .iter()
                .filter(|p| {
                    p.session == session && p.agent.as_deref().is_some_and(|a| agents.contains(&a))
                })
                .map(|p| p.id.as_str())
                .collect();
            tmux.kill_panes(&made)
        }),
    };
    if let Err(e) = result {
        tracing::warn!(session, "removing the panes of a failed layout up: {e}");
    }
}

/// How an agent's pane is started: its cwd, command, and the ORCH_* variables of SPEC §4
/// plus its profile's `env` and then the agent's own.
pub(crate) fn pane_spec<'a>(
    layout: &'a Layout,
    agent: &'a Agent,
    cwd: &'a std::path::Path,
    tmux: &Tmux,
    state: &StateDir,
) -> PaneSpec<'a> {
    let session = layout.session.as_str();
    let mut env = orch_env(
        session,
        agent.name.as_str(),
        agent.role.as_str(),
        tmux,
        state,
    );
    // `quality.identity: per-agent`: the pane's commits carry the agent's name, which the
    // gate uses to tell whose commit broke the check. The agent's own `env` may override.
    if layout
        .quality
        .as_ref()
        .is_some_and(|q| q.identity == crate::layout::Identity::PerAgent)
    {
        for key in ["GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"] {
            env.push((key.to_owned(), agent.name.to_string()));
        }
    }
    env.extend(crate::profile::get(agent.profile).pane_env());
    env.extend(agent.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let command = agent.command.as_deref().map(|c| {
        let hooked = with_activity_hooks(agent.profile, c, state, session);
        env.extend(hooked.env);
        hooked.command
    });
    PaneSpec {
        agent: agent.name.as_str(),
        role: agent.role.as_str(),
        cwd,
        env,
        command,
        transcript: transcript_or_warn(state, session, agent.name.as_str()),
        transcript_filter: super::transcript::filter_command(&layout.snapshot.redact),
    }
}

/// `command` with its CLI's activity signals installed ([`crate::profile::hooks`]). An
/// agent whose hooks cannot be set up still starts, read from its screen alone.
pub(crate) fn with_activity_hooks(
    profile: crate::layout::Profile,
    command: &str,
    state: &StateDir,
    session: &str,
) -> crate::profile::hooks::Hooked {
    let installed = std::env::current_exe()
        .map_err(anyhow::Error::from)
        .and_then(|exe| {
            let dir = state.session_dir(session)?;
            crate::profile::hooks::install(profile, command, &exe, &dir)
        });
    installed.unwrap_or_else(|e| {
        tracing::warn!(
            session,
            error = format!("{e:#}"),
            "activity hooks not installed"
        );
        crate::profile::hooks::Hooked {
            command: command.to_owned(),
            env: Vec::new(),
        }
    })
}

/// The ORCH_* variables of SPEC §4 for an agent's pane.
pub(crate) fn orch_env(
    session: &str,
    agent: &str,
    role: &str,
    tmux: &Tmux,
    state: &StateDir,
) -> Vec<(String, String)> {
    vec![
        ("ORCH_SESSION".to_owned(), session.to_owned()),
        ("ORCH_AGENT".to_owned(), agent.to_owned()),
        ("ORCH_ROLE".to_owned(), role.to_owned()),
        ("ORCH_SOCKET".to_owned(), tmux.socket_name()),
        (
            "ORCH_STATE_DIR".to_owned(),
            state.root().to_string_lossy().into_owned(),
        ),
    ]
}

/// The agent's transcript, ready to be piped into; an agent whose transcript cannot be
/// made still starts (without one), with a warning in the log.
pub(crate) fn transcript_or_warn(state: &StateDir, session: &str, agent: &str) -> Option<PathBuf> {
    match super::transcript::prepare_transcript(state, session, agent) {
        Ok(path) => Some(path),
        Err(e) => {
            tracing::warn!(session, agent, error = format!("{e:#}"), "no transcript");
            None
        }
    }
}

/// The directory an agent's pane starts in, making its git worktree first if it has one.
pub(crate) fn agent_cwd(
    layout: &Layout,
    agent: &Agent,
    state: &StateDir,
    notes: &mut Vec<String>,
) -> Result<PathBuf> {
    let Some(spec) = &agent.worktree else {
        return Ok(agent.cwd.clone().unwrap_or_else(|| layout.root.clone()));
    };
    let session = layout.session.as_str();
    let dest = state.worktrees_dir(session).join(agent.name.as_str());
    let wt = crate::git::ensure_worktree(
        &layout.root,
        session,
        agent.name.as_str(),
        &dest,
        &spec.copy,
    )
    .with_context(|| format!("preparing the git worktree of agent {}", agent.name))?;
    if wt.created {
        notes.push(format!(
            "{}: new git worktree on branch {} at {}",
            agent.name,
            wt.branch,
            dest.display()
        ));
    }
    for missing in wt.missing_copies {
        notes.push(format!(
            "{}: {} does not exist, so it was not copied into the worktree",
            agent.name,
            missing.display()
        ));
    }
    Ok(wt.cwd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tmux::Pane;

    fn layout() -> Layout {
        let d = std::env::temp_dir();
        crate::layout::parse(
            "session: s\nwindow: w\nagents:\n  - { name: a, role: BOSS }\n  - { name: b, role: WORKER }\n",
            "t.yaml",
            &d,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn pane(session: &str, window: &str, agent: Option<&str>) -> Pane {
        Pane {
            window_id: format!("@{window}"),
            window_name: window.into(),
            ..Pane::sample("%1", session, agent)
        }
    }

    #[test]
    fn nothing_running_creates_the_session() {
        let plan = plan_up(&layout(), &[pane("other", "w", Some("a"))]);
        assert_eq!(
            plan,
            UpPlan {
                target: UpTarget::NewSession,
                missing: vec![0, 1]
            }
        );
    }

    #[test]
    fn session_without_the_window_gets_a_new_window() {
        let plan = plan_up(&layout(), &[pane("s", "editor", None)]);
        assert_eq!(
            plan,
            UpPlan {
                target: UpTarget::NewWindow,
                missing: vec![0, 1]
            }
        );
    }

    #[test]
    fn missing_agents_join_the_window_of_the_others() {
        let plan = plan_up(
            &layout(),
            &[pane("s", "w", None), pane("s", "renamed", Some("b"))],
        );
        assert_eq!(
            plan,
            UpPlan {
                target: UpTarget::Window("@renamed".into()),
                missing: vec![0]
            }
        );
    }

    #[test]
    fn everything_present_means_nothing_to_do() {
        let plan = plan_up(
            &layout(),
            &[pane("s", "w", Some("a")), pane("s", "w", Some("b"))],
        );
        assert!(plan.missing.is_empty());
    }
}
