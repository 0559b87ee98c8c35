//! Delivering an agent's queued messages, oldest-highest first, with a record (audit line
//! and journal event) for each delivery and failure. `orch send` calls it, and the
//! supervisor every tick for agents that run again.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde_json::{Map, Value};

use super::deliver::{self, DeliverError, Delivered, InputStyle, Options};
use super::queue::{Message, Queue, READY_TIMEOUT};
use crate::monitor::activity::{Activity, ActivityProfile};
use crate::supervisor::event::{Event, EventKind};
use crate::supervisor::store::Journal;
use crate::tmux::{Pane, Tmux};

/// Writes audit lines and journal events for messages.
pub struct Recorder {
    audit: PathBuf,
    journal: Option<Journal>,
    /// The journal lines written, kept for a caller that also prints its events (the
    /// supervisor's stdout); `None` keeps nothing.
    echoed: Option<Vec<String>>,
}

impl Recorder {
    /// Records into `<session-dir>/audit.jsonl` and `<session-dir>/events.jsonl`.
    pub fn open(session_dir: &Path) -> Result<Recorder> {
        Ok(Recorder {
            audit: session_dir.join(super::AUDIT_FILE),
            journal: Some(Journal::open(session_dir)?),
            echoed: None,
        })
    }

    /// [`Recorder::open`], keeping every journal line for [`Recorder::take_echoed`].
    pub fn open_echoing(session_dir: &Path) -> Result<Recorder> {
        Ok(Recorder {
            echoed: Some(Vec::new()),
            ..Recorder::open(session_dir)?
        })
    }

    /// The journal lines written since the last call.
    pub fn take_echoed(&mut self) -> Vec<String> {
        self.echoed.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Appends the audit line (which must succeed) and the journal event (best effort:
    /// the audit log is the record of truth).
    pub fn record(
        &mut self,
        kind: EventKind,
        agent: Option<&str>,
        fields: Map<String, Value>,
    ) -> Result<()> {
        let now = SystemTime::now();
        let audit_kind = match kind {
            EventKind::MessageQueued => "send",
            EventKind::MessageDelivered => "delivered",
            EventKind::MessageFailed => "failed",
            EventKind::MessageRefused => "refused",
            _ => "other",
        };
        let mut audit_fields = Map::new();
        if let Some(a) = agent {
            audit_fields.insert("to".into(), Value::String(a.to_owned()));
        }
        audit_fields.extend(fields.clone());
        super::audit::append(&self.audit, audit_kind, audit_fields, now)?;
        if let Some(j) = &mut self.journal {
            let mut event = Event::new(kind, agent);
            event.fields = fields;
            match j.append(&event, now) {
                Ok(line) => {
                    if let Some(echoed) = &mut self.echoed {
                        echoed.push(line);
                    }
                }
                Err(e) => tracing::warn!("could not journal a message event: {e:#}"),
            }
        }
        Ok(())
    }
}

/// What happened to one agent's queue.
#[derive(Debug, Default)]
pub struct Drained {
    pub delivered: Vec<(Message, Delivered)>,
    /// Why the rest waits (no pane, dead, in copy mode), with how many are left.
    pub waiting: Option<(String, usize)>,
    /// The message that failed, and why. Delivery to this agent stops there.
    pub failed: Option<(Message, String)>,
}

/// The pane of `agent` in `session`, from one `list-panes` result.
pub fn pane_of<'a>(panes: &'a [Pane], session: &str, agent: &str) -> Option<&'a Pane> {
    panes
        .iter()
        .find(|p| p.session == session && p.agent.as_deref() == Some(agent))
}

/// How orch types into one agent and reads its screen: its input style and screen
/// markers, from its layout entry (a plain program read as a shell without one).
#[derive(Clone, Debug)]
pub struct AgentIo {
    pub style: InputStyle,
    pub profile: ActivityProfile,
}

impl AgentIo {
    pub fn of(agent: Option<&crate::layout::Agent>) -> AgentIo {
        match agent {
            Some(a) => AgentIo {
                style: InputStyle::for_agent(a.profile, a.command.as_deref())
                    .with_overrides(&a.paste),
                profile: ActivityProfile::for_agent(a),
            },
            None => AgentIo {
                style: InputStyle::plain(),
                profile: ActivityProfile::for_profile(crate::layout::Profile::Shell),
            },
        }
    }
}

/// The agent a drain delivers to, and what it is doing.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub agent: &'a str,
    pub pane: Option<&'a Pane>,
    /// How its CLI takes a paste.
    pub style: &'a InputStyle,
    /// How its screen is read.
    pub profile: &'a ActivityProfile,
    /// What it is doing now (the supervisor's resolved activity, or a screen reading).
    pub activity: Activity,
    /// For how long its activity has been `unknown` (zero otherwise).
    pub unknown_for: Duration,
}

/// Whether a message may go to an agent doing `activity` now. Pure. A message that is not
/// `when_ready` always may; one that is waits while the agent works (a real agent works
/// for minutes) until its own `ready_within`, and while the agent's activity is unknown at
/// most [`READY_TIMEOUT`] (counted from when it was queued or became unknown, whichever is
/// later).
pub fn may_deliver(
    msg: &Message,
    activity: Activity,
    unknown_for: Duration,
    waited: Duration,
) -> bool {
    if !msg.when_ready {
        return true;
    }
    if msg
        .ready_within_ms
        .is_some_and(|ms| waited >= Duration::from_millis(ms))
    {
        return true;
    }
    match activity {
        Activity::Idle | Activity::Waiting => true,
        Activity::Working => false,
        Activity::Unknown => unknown_for.min(waited) >= READY_TIMEOUT,
    }
}

/// Delivers what is queued for the target while its pane takes input. Messages queued
/// `when_ready` wait for [`may_deliver`] while the others go ahead. A message queued by a
/// restore also waits while the pane shows only its replayed history (whose old prompt
/// looks ready), and the `when_ready` messages behind it wait with it, keeping their order.
pub fn drain_agent(
    tmux: &Tmux,
    queue: &Queue,
    rec: &mut Recorder,
    target: &Target<'_>,
    opts: Options,
) -> Result<Drained> {
    let agent = target.agent;
    let mut out = Drained::default();
    let why = match target.pane {
        None => Some("without a pane (is the session up?)"),
        Some(p) if p.dead => Some("dead"),
        Some(p) if p.in_mode => Some("in copy mode"),
        Some(_) => None,
    };
    let pane = match (why, target.pane) {
        (None, Some(p)) => p,
        (why, _) => {
            let n = queue.pending(agent)?.len();
            if n > 0 {
                out.waiting = Some((why.unwrap_or("not ready").to_owned(), n));
            }
            return Ok(out);
        }
    };
    let _lock = queue.lock(agent)?;
    let pending = queue.pending(agent)?;
    let total = pending.len();
    let mut replay_shown = false;
    for (i, msg) in pending.into_iter().enumerate() {
        if !queue.contains(&msg) {
            continue; // delivered by someone else meanwhile
        }
        let waited = Duration::from_millis(now_ms().saturating_sub(msg.queued_at_ms));
        let mut go = may_deliver(&msg, target.activity, target.unknown_for, waited);
        // A restored pane: the agent's readiness is read from what it drew since its
        // replay, not from the resolved activity, which may still be the replay's.
        if msg.when_ready
            && let Some(guard) = &msg.after_replay
            && waited < READY_TIMEOUT
        {
            let ready = guard.is_over(SystemTime::now())
                && tmux
                    .pane_input(&pane.id)
                    .ok()
                    .and_then(|p| guard.fresh(&p))
                    .is_some_and(|f| {
                        matches!(
                            target.profile.classify(&f),
                            Activity::Idle | Activity::Waiting
                        )
                    });
            replay_shown = !ready;
            go = ready;
        }
        if msg.when_ready && replay_shown && waited < READY_TIMEOUT {
            go = false;
        }
        if !go {
            let why = match target.activity {
                Activity::Working => "working",
                _ => "not idle yet",
            };
            out.waiting = Some((why.to_owned(), total - i));
            continue;
        }
        let o = Options {
            enter: opts.enter && msg.enter,
            ..opts
        };
        match deliver::deliver(tmux, &pane.id, &msg.text, o, target.style) {
            Ok(d) => {
                queue.remove(&msg)?;
                // Only a message the agent was given as a task is its "last task".
                if d.submitted
                    && let Err(e) = queue.set_last(&msg)
                {
                    tracing::warn!(agent, "remembering the last message: {e:#}");
                }
                let latency = now_ms().saturating_sub(msg.queued_at_ms);
                let mut f = Map::new();
                f.insert("id".into(), msg.id.clone().into());
                f.insert("from".into(), msg.from.clone().into());
                f.insert("latency_ms".into(), latency.into());
                f.insert("deliver_ms".into(), (d.took.as_millis() as u64).into());
                f.insert("retries".into(), d.retries.into());
                f.insert("confirmation".into(), d.confirmation.as_str().into());
                f.insert("submitted".into(), d.submitted.into());
                rec.record(EventKind::MessageDelivered, Some(agent), f)?;
                out.delivered.push((msg, d));
            }
            Err(DeliverError::NotReady(why)) => {
                out.waiting = Some((why.to_owned(), total - i));
                break;
            }
            Err(DeliverError::Failed { reason, pasted }) => {
                // Pasted text without a confirmation must not be pasted again: it is set
                // aside; a message that never reached the pane stays queued.
                let kept = if pasted {
                    Some(queue.give_up(&msg)?)
                } else {
                    None
                };
                let mut f = Map::new();
                if let Some(path) = kept {
                    f.insert("kept".into(), path.to_string_lossy().into_owned().into());
                }
                f.insert("id".into(), msg.id.clone().into());
                f.insert("from".into(), msg.from.clone().into());
                f.insert("reason".into(), reason.clone().into());
                f.insert("requeued".into(), (!pasted).into());
                rec.record(EventKind::MessageFailed, Some(agent), f)?;
                out.failed = Some((msg, reason));
                break;
            }
        }
    }
    Ok(out)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(when_ready: bool, ready_within_ms: Option<u64>) -> Message {
        Message {
            id: "1-1".into(),
            from: "user".into(),
            to: "a".into(),
            priority: super::super::queue::Priority::Normal,
            text: "t".into(),
            queued_at_ms: 0,
            seq: 1,
            enter: true,
            when_ready,
            ready_within_ms,
            after_replay: None,
        }
    }

    #[test]
    fn when_idle_waits_while_working_and_falls_back_only_while_unknown() {
        let s = Duration::from_secs;
        let m = msg(true, None);
        assert!(may_deliver(&m, Activity::Idle, s(0), s(0)));
        assert!(may_deliver(&m, Activity::Waiting, s(0), s(0)));
        // A real agent works for minutes: no fallback while it is known to work.
        assert!(!may_deliver(&m, Activity::Working, s(0), s(600)));
        // Unknown: 30 s, counted from when it became unknown or was queued.
        assert!(!may_deliver(&m, Activity::Unknown, s(29), s(600)));
        assert!(may_deliver(&m, Activity::Unknown, s(30), s(600)));
        assert!(!may_deliver(&m, Activity::Unknown, s(600), s(10)));
        // --timeout bounds the wait whatever the agent does.
        let t = msg(true, Some(5_000));
        assert!(!may_deliver(&t, Activity::Working, s(0), s(4)));
        assert!(may_deliver(&t, Activity::Working, s(0), s(5)));
        // Not when_ready: at once.
        assert!(may_deliver(
            &msg(false, None),
            Activity::Working,
            s(0),
            s(0)
        ));
    }
}
