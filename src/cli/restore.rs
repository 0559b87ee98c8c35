//! `orch restore [ID|latest] [--no-handover]`.
//!
//! Snapshots are read from the session named by `--session` when it has any, else from
//! the layout's session; the session is recreated under `--session` when given, else
//! under the name saved in the snapshot.
//!
//! The handovers are queued by the restore. A running supervisor of the session delivers
//! them (it reads every screen anyway); without one, this command waits for the agents
//! itself, at most [`READY_TIMEOUT`], and says what it delivered.

use std::process::ExitCode;

use anyhow::Result;

use super::{Context, out};
use crate::messaging::queue::READY_TIMEOUT;
use crate::snapshot::handover::{self, Outcome};
use crate::snapshot::restore::{self, RestoreRequest, Which};
use crate::supervisor::control::{self, Request};
use crate::supervisor::store::Journal;

pub(super) fn run(ctx: &Context, id: Option<&str>, no_handover: bool) -> Result<ExitCode> {
    let state = ctx.state()?;
    let as_session = ctx.session_override()?;
    let as_session = as_session.as_ref().map(|s| s.as_str());
    // The layout on disk gives the agents their real environment (a snapshot's is
    // redacted); a layout that does not load leaves that to the snapshot's own file.
    let layout = ctx
        .layout_source()
        .ok()
        .and_then(|source| crate::layout::load(&source).ok());
    let from_session = match as_session {
        Some(name) if restore::snapshots_dir(&state, name).is_dir() => name.to_owned(),
        _ => {
            let source = ctx.layout_source()?;
            crate::layout::load(&source)?.session.to_string()
        }
    };
    let layout = layout.filter(|l| l.session.as_str() == from_session);
    let _log = crate::state::create_private_dir(&state.root().join(&from_session))
        .ok()
        .and_then(|()| crate::logging::init(&state.root().join(&from_session)));
    let tmux = ctx.tmux();
    let began = std::time::Instant::now();
    let report = restore::restore(
        &tmux,
        &state,
        &RestoreRequest {
            from_session: &from_session,
            which: Which::parse(id),
            as_session,
            handover: !no_handover,
            layout: layout.as_ref(),
        },
    )?;
    for note in &report.notes {
        out!("{note}")?;
    }
    // The restored session's journal records the handover.
    let dir = state.session_dir(&report.session)?;
    let mut journal = Journal::open(&dir)?;
    for event in report.events() {
        journal.append(&event, std::time::SystemTime::now())?;
    }
    for m in &report.stopped {
        out!(
            "stopped pid {} ({}) of {}: it outlived the tmux server",
            m.pid,
            m.command,
            m.agent.as_deref().unwrap_or("the session")
        )?;
    }
    out!(
        "session {} restored from snapshot {} on tmux socket {}: {} agents in {} ms",
        report.session,
        report.snapshot_id,
        tmux.socket_name(),
        report.panes.len(),
        report.duration.as_millis()
    )?;
    if report.handovers.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    if let Ok(Some(_)) = control::request(&dir, &Request::Status) {
        out!(
            "handover queued for {} agent(s); the running supervisor delivers each once its agent looks ready",
            report.handovers.len()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    out!(
        "waiting up to {} for {} agent(s) to look ready for their handover (interrupting leaves them queued)",
        humantime::format_duration(READY_TIMEOUT),
        report.handovers.len()
    )?;
    let started = std::time::Instant::now();
    let outcomes = handover::deliver(
        &tmux,
        &dir,
        &report.session,
        &report.handovers,
        READY_TIMEOUT,
        began,
    )?;
    let mut delivered = 0;
    for (h, outcome) in report.handovers.iter().zip(&outcomes) {
        match outcome {
            Outcome::Delivered { after } => {
                delivered += 1;
                out!(
                    "{}: handover delivered, {} ms after the restore began",
                    h.agent,
                    after.as_millis()
                )?;
            }
            Outcome::Queued(why) => out!(
                "{}: handover still queued ({why}); `orch supervise` or the next `orch send` to it delivers it",
                h.agent
            )?,
            Outcome::Failed(reason) => out!(
                "{}: handover not confirmed on screen ({reason}); see `orch events` and the audit log",
                h.agent
            )?,
        }
    }
    out!(
        "handover: {delivered} of {} delivered in {} ms",
        outcomes.len(),
        started.elapsed().as_millis()
    )?;
    Ok(ExitCode::SUCCESS)
}
