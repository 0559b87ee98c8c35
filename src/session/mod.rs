//! A session as a whole: bring it up from a layout, take it down, report its state.
//!
//! The decisions are pure functions of the layout and of what tmux reports (`plan_up`,
//! `agent_state`); the functions around them do the I/O through the `tmux` module.

pub mod agent;
mod down;
mod status;
pub mod transcript;
mod up;

pub(crate) use down::stop_panes;
pub use down::{DownReport, down};
pub use status::{AgentStatus, StatusReport, SupervisorStatus, status};
pub use up::{UpReport, plan_up, up};
pub(crate) use up::{agent_cwd, orch_env, pane_spec, transcript_or_warn, with_activity_hooks};

use crate::tmux::Pane;

/// The panes of `session` that orch made for agents (`@orch_agent` set).
fn agent_panes<'a>(panes: &'a [Pane], session: &str) -> impl Iterator<Item = &'a Pane> {
    panes
        .iter()
        .filter(move |p| p.session == session && p.agent.is_some())
}

/// A session that should be running but is not.
#[derive(Debug, thiserror::Error)]
#[error("session {session} is not running on tmux socket {socket}; start it with `orch layout up`")]
pub struct NotRunning {
    pub session: String,
    pub socket: String,
}
