//! A gate call from a command or the dashboard (`orch check`, `orch rollback …`, `y`/`n`):
//! with a supervisor running, it goes to the supervisor's gate over the control socket;
//! without one, the caller runs the same gate itself, holding the session's supervisor
//! lock meanwhile so no supervisor's gate works on the same state at the same time.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::service::{Answer, Call};
use super::{BadInput, Config, Gate, Host};
use crate::layout::Layout;
use crate::state::StateDir;
use crate::supervisor::control::{Reply, Request, request_waiting};
use crate::supervisor::event::Event;
use crate::supervisor::store::{Journal, Lock, LockHeld};
use crate::tmux::Tmux;

/// Runs `c` in the supervisor's gate if one runs, else here under the session lock;
/// `on_event` sees each event the gate reports meanwhile (without a supervisor).
pub fn call(
    layout: &Layout,
    tmux: &Tmux,
    state: &StateDir,
    layout_file: Option<&Path>,
    c: Call,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Answer> {
    if layout.quality.is_none() {
        return Err(BadInput::NoQuality.into());
    }
    let session = layout.session.to_string();
    let dir = state.session_dir(&session)?;
    let req = Request::Gate { call: c.clone() };
    if let Some(reply) = request_waiting(&dir, &req, c.patience())? {
        return from_reply(reply);
    }
    let _lock = match Lock::acquire(&dir, &session) {
        Ok(lock) => lock,
        Err(e) => {
            let Some(held) = e.downcast_ref::<LockHeld>() else {
                return Err(e);
            };
            // A supervisor may have started just now: it answers then.
            if let Some(reply) = request_waiting(&dir, &req, c.patience())? {
                return from_reply(reply);
            }
            bail!(
                "another orch process (pid {}) holds the lock of session {session}; try again when it is done",
                held.pid
            );
        }
    };
    let gate = Gate::open(Config::from_layout(layout, &dir)?)?;
    let mut host = CommandHost {
        layout,
        tmux: tmux.clone(),
        state: state.clone(),
        dir: dir.clone(),
        layout_file: layout_file.map(Path::to_path_buf),
        journal: Journal::open(&dir)?,
        on_event,
    };
    super::service::call(&gate, c, &mut host, true)
}

fn from_reply(reply: Reply) -> Result<Answer> {
    if reply.ok {
        let value = reply
            .gate
            .ok_or_else(|| anyhow::anyhow!("the supervisor's gate gave no answer"))?;
        return Ok(serde_json::from_value(value)?);
    }
    let error = reply
        .error
        .unwrap_or_else(|| "the supervisor's gate refused".into());
    let bad_input = reply
        .gate
        .as_ref()
        .and_then(|g| g["bad_input"].as_bool())
        .unwrap_or(false);
    if bad_input {
        Err(crate::error::BadInput(error).into())
    } else {
        Err(anyhow::anyhow!(error))
    }
}

/// The gate's host when no supervisor runs: events to the journal (and to the caller),
/// the snapshot taken here, messages delivered here, agents restarted here.
struct CommandHost<'a> {
    layout: &'a Layout,
    tmux: Tmux,
    state: StateDir,
    dir: PathBuf,
    layout_file: Option<PathBuf>,
    journal: Journal,
    on_event: &'a mut dyn FnMut(&Event),
}

impl Host for CommandHost<'_> {
    fn emit(&mut self, event: Event) {
        if let Err(e) = self.journal.append(&event, std::time::SystemTime::now()) {
            tracing::warn!("journaling a gate event: {e:#}");
        }
        (self.on_event)(&event);
    }

    fn snapshot(&mut self) -> Result<bool> {
        match crate::snapshot::take(
            self.layout,
            &self.tmux,
            &self.state,
            "rollback",
            None,
            self.layout_file.as_deref(),
        ) {
            Ok(written) => {
                written.record(&self.dir, "rollback")?;
                Ok(true)
            }
            Err(e) if e.downcast_ref::<crate::session::NotRunning>().is_some() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn deliver_now(&mut self, agent: &str) {
        use crate::messaging::deliver::Options;
        use crate::messaging::drain::{AgentIo, Recorder, Target, drain_agent, pane_of};
        let Ok(panes) = self.tmux.list_panes() else {
            return;
        };
        let pane = pane_of(&panes, self.layout.session.as_str(), agent);
        let queue = crate::messaging::queue::Queue::new(&self.dir);
        let Ok(mut rec) = Recorder::open(&self.dir) else {
            return;
        };
        let io = AgentIo::of(self.layout.agents.iter().find(|a| a.name.as_str() == agent));
        // Only what is not waiting for the agent to be ready goes now (the urgent
        // messages of the gate); without a supervisor its activity is not known.
        let target = Target {
            agent,
            pane,
            style: &io.style,
            profile: &io.profile,
            activity: crate::monitor::activity::Activity::Unknown,
            unknown_for: std::time::Duration::ZERO,
        };
        if let Err(e) = drain_agent(&self.tmux, &queue, &mut rec, &target, Options::default()) {
            tracing::warn!(agent, "delivering the gate's message: {e:#}");
        }
    }

    fn restart(&mut self, agent: &str) -> Result<()> {
        crate::session::agent::stop(self.layout, &self.tmux, agent)?;
        crate::session::agent::start(self.layout, &self.tmux, &self.state, agent)?;
        Ok(())
    }
}
