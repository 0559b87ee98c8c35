//! `orch restart|stop|start AGENT`: through the running supervisor if there is one,
//! directly otherwise.

use std::process::ExitCode;

use anyhow::{Result, bail};

use super::{Context, out};
use crate::session::agent::{self, Outcome};
use crate::supervisor::control::{Request, request};

#[derive(Clone, Copy, Debug)]
pub(super) enum Action {
    Restart,
    Stop,
    Start,
}

pub(super) fn run(ctx: &Context, action: Action, name: &str) -> Result<ExitCode> {
    let layout = ctx.layout()?;
    let state = ctx.state()?;
    let dir = state.session_dir(layout.session.as_str())?;
    let req = match action {
        Action::Restart => Request::Restart {
            agent: name.to_owned(),
        },
        Action::Stop => Request::Stop {
            agent: name.to_owned(),
        },
        Action::Start => Request::Start {
            agent: name.to_owned(),
        },
    };
    if let Some(reply) = request(&dir, &req)? {
        if !reply.ok {
            bail!(super::BadInput(
                reply
                    .error
                    .unwrap_or_else(|| "the supervisor refused".into())
            ));
        }
        let verb = match action {
            Action::Restart => "restart",
            Action::Stop => "stop",
            Action::Start => "start",
        };
        out!("{name}: {verb} handed to the supervisor")?;
        return Ok(ExitCode::SUCCESS);
    }
    let tmux = ctx.tmux();
    let outcome = match action {
        Action::Stop => agent::stop(&layout, &tmux, name)?,
        Action::Start => agent::start(&layout, &tmux, &state, name)?,
        Action::Restart => {
            agent::stop(&layout, &tmux, name)?;
            agent::start(&layout, &tmux, &state, name)?
        }
    };
    let text = match outcome {
        Outcome::Stopped { killed: false } => format!("{name}: stopped"),
        Outcome::Stopped { killed: true } => format!(
            "{name}: stopped (killed after {}s)",
            agent::AGENT_GRACE.as_secs()
        ),
        Outcome::AlreadyStopped => format!("{name}: not running"),
        Outcome::Started { pid } => format!("{name}: running (pid {pid})"),
        Outcome::AlreadyRunning => format!("{name}: already running"),
    };
    out!("{text}")?;
    Ok(ExitCode::SUCCESS)
}
