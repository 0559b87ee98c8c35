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

    /// Appends an audit line only (no journal event), e.g. the `delivering` line written
    /// before a paste: a message whose audit line cannot be written is not delivered.
    pub fn audit_only(
        &mut self,
        kind: &str,
        agent: &str,
        fields: Map<String, Value>,
    ) -> Result<()> {
        let mut audit_fields = Map::new();
        audit_fields.insert("to".into(), Value::String(agent.to_owned()));
        audit_fields.extend(fields);
        // Not synced on its own: the outcome line right after it syncs both.
        let records = vec![(kind.to_owned(), audit_fields)];
        super::audit::append_records(&self.audit, records, SystemTime::now(), false).map(drop)
    }

    /// [`Recorder::record`] for many agents at once: one audit append (one lock, one
    /// fsync) and one journal write, as `orch send all` needs for 200 agents.
    pub fn record_many(
        &mut self,
        kind: EventKind,
        items: Vec<(String, Map<String, Value>)>,
    ) -> Result<()> {
        let now = SystemTime::now();
        let audit_kind = audit_kind(kind);
        let records = items
            .iter()
            .map(|(agent, fields)| {
                let mut f = Map::new();
                f.insert("to".into(), Value::String(agent.clone()));
                f.extend(fields.clone());
                (audit_kind.to_owned(), f)
            })
            .collect();
        super::audit::append_records(&self.audit, records, now, true)?;
        if let Some(j) = &mut self.journal {
            let lines: Vec<String> = items
                .into_iter()
                .map(|(agent, fields)| {
                    let mut event = Event::new(kind, Some(&agent));
                    event.fields = fields;
                    event.to_line(now)
                })
                .collect();
            if !lines.is_empty() {
                match j.append_line(&lines.join("\n")) {
                    Ok(()) => {
                        if let Some(echoed) = &mut self.echoed {
                            echoed.extend(lines);
                        }
                    }
                    Err(e) => tracing::warn!("could not journal message events: {e:#}"),
                }
            }
        }
        Ok(())
    }

    /// Appends a journal event only (best effort), for what the audit log does not keep.
    pub fn event(&mut self, kind: EventKind, agent: Option<&str>, fields: Map<String, Value>) {
        if let Some(j) = &mut self.journal {
            let mut event = Event::new(kind, agent);
            event.fields = fields;
            match j.append(&event, SystemTime::now()) {
                Ok(line) => {
                    if let Some(echoed) = &mut self.echoed {
                        echoed.push(line);
                    }
                }
                Err(e) => tracing::warn!("could not journal an event: {e:#}"),
            }
        }
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
        let audit_kind = audit_kind(kind);
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

/// The audit log's name for a message event.
fn audit_kind(kind: EventKind) -> &'static str {
    match kind {
        EventKind::MessageQueued => "send",
        EventKind::MessageDelivered => "delivered",
        EventKind::MessageFailed => "failed",
        EventKind::MessageRefused => "refused",
        _ => "other",
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
    /// The audit log could not be written, so nothing was delivered (the messages stay
    /// queued): why.
    pub audit_failed: Option<String>,
    /// Queue files that could not be read, set aside into `queue/<agent>/corrupt/`.
    pub corrupt: Vec<Corrupt>,
}

/// A queue file that could not be read, and what became of its message.
#[derive(Clone, Debug)]
pub struct Corrupt {
    pub file: String,
    pub moved_to: PathBuf,
    pub error: String,
    /// The snapshot whose copy of the message was queued again in its place.
    pub recovered_from: Option<String>,
}

/// Sets aside the queue files of `agent` that are not messages (into
/// `queue/<agent>/corrupt/`), queues again each one's message from the newest snapshot
/// that holds it, and records each (a `message_corrupt` event and an audit line). Never
/// silent: a file that cannot even be moved is still reported.
pub fn quarantine_corrupt(
    queue: &Queue,
    rec: &mut Recorder,
    session_dir: &Path,
    agent: &str,
) -> Result<Vec<Corrupt>> {
    let (_, unreadable) = queue.scan(agent)?;
    let mut out = Vec::new();
    for bad in unreadable {
        let moved_to = match queue.quarantine(agent, &bad) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(agent, "setting aside {}: {e:#}", bad.path.display());
                bad.path.clone()
            }
        };
        let recovered = crate::snapshot::queued_copy(session_dir, agent, &bad.name)
            .filter(|(_, msg)| queue.restore_message(msg).unwrap_or(false));
        let mut f = Map::new();
        f.insert("file".into(), bad.name.clone().into());
        f.insert(
            "moved_to".into(),
            moved_to.to_string_lossy().into_owned().into(),
        );
        f.insert("error".into(), bad.error.clone().into());
        f.insert("recovered".into(), recovered.is_some().into());
        if let Some((snapshot, msg)) = &recovered {
            f.insert("snapshot".into(), snapshot.clone().into());
            f.insert("id".into(), msg.id.clone().into());
        }
        let audit = rec.audit_only("corrupt", agent, f.clone());
        if let Err(e) = audit {
            tracing::warn!(agent, "auditing a corrupt queue file: {e:#}");
        }
        rec.event(EventKind::MessageCorrupt, Some(agent), f);
        out.push(Corrupt {
            file: bad.name,
            moved_to,
            error: bad.error,
            recovered_from: recovered.map(|(id, _)| id),
        });
    }
    Ok(out)
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
    let lock = queue.lock(target.agent)?;
    drain_locked(lock, tmux, queue, rec, target, opts)
}

/// [`drain_agent`], unless another deliverer holds the agent's queue (`None`): the
/// supervisor never waits for `orch send` to finish delivering.
pub fn try_drain_agent(
    tmux: &Tmux,
    queue: &Queue,
    rec: &mut Recorder,
    target: &Target<'_>,
    opts: Options,
) -> Result<Option<Drained>> {
    let Some(lock) = queue.try_lock(target.agent)? else {
        return Ok(None);
    };
    drain_locked(lock, tmux, queue, rec, target, opts).map(Some)
}

fn drain_locked(
    lock: super::queue::AgentLock,
    tmux: &Tmux,
    queue: &Queue,
    rec: &mut Recorder,
    target: &Target<'_>,
    opts: Options,
) -> Result<Drained> {
    let agent = target.agent;
    let mut out = Drained::default();
    if let Some(session_dir) = queue.session_dir() {
        out.corrupt = quarantine_corrupt(queue, rec, &session_dir, agent)?;
    }
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
    let _lock = lock;
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
        // No delivery without its audit line: written first, it also proves the log can
        // be written now (a full disk, a read-only or vanished file keep the message
        // queued).
        let mut intent = Map::new();
        intent.insert("id".into(), msg.id.clone().into());
        intent.insert("from".into(), msg.from.clone().into());
        if let Err(e) = rec.audit_only("delivering", agent, intent) {
            out.audit_failed = Some(format!("{e:#}"));
            out.waiting = Some((
                "waiting: the audit log cannot be written".to_owned(),
                total - i,
            ));
            break;
        }
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

/// One message for each of many agents, all the same text, delivered together through
/// [`super::broadcast::deliver_many`] (a handful of tmux processes for any number of
/// agents), with the same records as [`drain_agent`]. An agent is taken only when its
/// queue holds exactly its message (nothing queued ahead of it, nothing waiting for the
/// agent to look ready), its pane takes input, and no other deliverer holds its queue;
/// for the others the result is `None` and the caller drains them one by one.
pub fn drain_together(
    tmux: &Tmux,
    queue: &Queue,
    rec: &mut Recorder,
    targets: &[(&str, Option<&Pane>, &Message, &InputStyle)],
    opts: Options,
) -> Result<Vec<Option<Drained>>> {
    let mut out: Vec<Option<Drained>> = std::iter::repeat_with(|| None)
        .take(targets.len())
        .collect();
    let mut locks = Vec::new();
    let mut taken: Vec<usize> = Vec::new();
    let text = targets.first().map(|(_, _, m, _)| m.text.as_str());
    for (i, (agent, pane, msg, _)) in targets.iter().enumerate() {
        if pane.is_none_or(|p| p.dead || p.in_mode) {
            continue;
        }
        if msg.when_ready || msg.after_replay.is_some() || Some(msg.text.as_str()) != text {
            continue;
        }
        let Some(lock) = queue.try_lock(agent)? else {
            continue;
        };
        let (pending, bad) = queue.scan(agent)?;
        if !bad.is_empty() || pending.len() != 1 || pending[0].id != msg.id {
            continue;
        }
        locks.push(lock);
        taken.push(i);
    }
    if taken.is_empty() {
        return Ok(out);
    }
    // The intent lines first: nothing is pasted that the audit log cannot record.
    let intents = taken
        .iter()
        .map(|&i| {
            let (agent, _, msg, _) = targets[i];
            let mut f = Map::new();
            f.insert("to".into(), Value::String(agent.to_owned()));
            f.insert("id".into(), msg.id.clone().into());
            f.insert("from".into(), msg.from.clone().into());
            ("delivering".to_owned(), f)
        })
        .collect();
    if let Err(e) = super::audit::append_records(&rec.audit, intents, SystemTime::now(), false) {
        for &i in &taken {
            out[i] = Some(Drained {
                audit_failed: Some(format!("{e:#}")),
                waiting: Some(("waiting: the audit log cannot be written".to_owned(), 1)),
                ..Drained::default()
            });
        }
        return Ok(out);
    }
    taken.retain(|&i| targets[i].1.is_some());
    let panes: Vec<(&str, &InputStyle)> = taken
        .iter()
        .filter_map(|&i| targets[i].1.map(|p| (p.id.as_str(), targets[i].3)))
        .collect();
    let text = &targets[taken[0]].2.text;
    let enter = targets[taken[0]].2.enter;
    let o = Options {
        enter: opts.enter && enter,
        ..opts
    };
    let results = super::broadcast::deliver_many(tmux, &panes, text, o);
    let mut delivered = Vec::new();
    let mut failed = Vec::new();
    for (&i, result) in taken.iter().zip(results) {
        let (agent, _, msg, _) = targets[i];
        let mut d = Drained::default();
        match result {
            Ok(x) => {
                queue.remove(msg)?;
                if x.submitted
                    && let Err(e) = queue.set_last(msg)
                {
                    tracing::warn!(agent, "remembering the last message: {e:#}");
                }
                let mut f = Map::new();
                f.insert("id".into(), msg.id.clone().into());
                f.insert("from".into(), msg.from.clone().into());
                f.insert(
                    "latency_ms".into(),
                    now_ms().saturating_sub(msg.queued_at_ms).into(),
                );
                f.insert("deliver_ms".into(), (x.took.as_millis() as u64).into());
                f.insert("retries".into(), x.retries.into());
                f.insert("confirmation".into(), x.confirmation.as_str().into());
                f.insert("submitted".into(), x.submitted.into());
                delivered.push((agent.to_owned(), f));
                d.delivered.push((msg.clone(), x));
            }
            Err(DeliverError::NotReady(why)) => d.waiting = Some((why.to_owned(), 1)),
            Err(DeliverError::Failed { reason, pasted }) => {
                let kept = if pasted {
                    Some(queue.give_up(msg)?)
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
                failed.push((agent.to_owned(), f));
                d.failed = Some((msg.clone(), reason));
            }
        }
        out[i] = Some(d);
    }
    drop(locks);
    if !delivered.is_empty() {
        rec.record_many(EventKind::MessageDelivered, delivered)?;
    }
    if !failed.is_empty() {
        rec.record_many(EventKind::MessageFailed, failed)?;
    }
    Ok(out)
}

/// Deliveries (and queue writes) running at once: enough to keep tmux busy, few enough
/// that 200 agents do not mean 200 threads.
pub const PARALLEL: usize = 16;

/// `f` on every item, [`PARALLEL`] at a time, results in the items' order: how `orch
/// send all` and the supervisor deliver to many agents at once (each agent's queue has
/// its own lock, and tmux serves many clients).
pub fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    if items.len() <= 1 {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL.min(items.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    if let Ok(mut all) = results.lock() {
                        all.push((i, r));
                    }
                }
            });
        }
    });
    let mut all = results.into_inner().unwrap_or_default();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
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

    #[test]
    fn in_parallel_keeps_the_order_of_its_items() {
        let items: Vec<u64> = (0..100).collect();
        let out = in_parallel(&items, |n| {
            std::thread::sleep(std::time::Duration::from_micros(100 - n));
            n * 2
        });
        assert_eq!(out, items.iter().map(|n| n * 2).collect::<Vec<_>>());
    }
}
