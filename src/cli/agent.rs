//! `orch restart|stop|start AGENT`: [`crate::session::agent::control`], then one line.

use std::process::ExitCode;

use anyhow::Result;

use super::{Context, out};
use crate::session::agent;

pub(super) use crate::session::agent::Action;

pub(super) fn run(ctx: &Context, action: Action, name: &str) -> Result<ExitCode> {
    let layout = ctx.layout()?;
    let state = ctx.state()?;
    let outcome = agent::control(&layout, &ctx.tmux(), &state, action, name)?;
    out!("{}", agent::describe(name, action, &outcome))?;
    Ok(ExitCode::SUCCESS)
}
