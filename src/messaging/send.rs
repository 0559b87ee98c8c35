//! Sending a message (SPEC §4 `orch send`): resolve the target (a name, `role:ROLE`,
//! `all`), check the ACL and record each refusal, queue and audit the message for every
//! target, then deliver what can be delivered now — to many agents together, each
//! confirmed and submitted by its own CLI's input style — and, when asked, keep trying
//! until each target has it or the time is up. `orch send` and the dashboard both call
//! [`send`]; they only differ in how they show each [`Outcome`].

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Map, Value};

use super::acl::{self, Sender};
use super::deliver::Options;
use super::drain::{
    AgentIo, Corrupt, Drained, Recorder, Target, drain_agent, drain_together, in_parallel, pane_of,
};
use super::queue::{Delivery, Message, Priority, Queue};
use crate::error::BadInput;
use crate::layout::Layout;
use crate::monitor::activity::{Activity, ActivityProfile};
use crate::supervisor::event::EventKind;
use crate::tmux::{Pane, Tmux};

/// How long [`SendRequest::wait`] waits without a timeout of its own.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// One message to send.
#[derive(Clone, Debug)]
pub struct SendRequest<'a> {
    /// An agent's name, `role:ROLE`, or `all`.
    pub target: &'a str,
    /// Already sanitized ([`crate::tmux::paste_safe`]) and not blank.
    pub text: &'a str,
    pub priority: Priority,
    /// Press Enter after the paste (`--no-enter` clears it).
    pub enter: bool,
    /// Deliver once the agent is idle or waiting for input (`--when idle`).
    pub when_idle: bool,
    /// Keep trying until every target has it (or `timeout`); otherwise one round.
    pub wait: bool,
    /// How long `wait` waits ([`DEFAULT_WAIT`] without it); with `when_idle`, also how
    /// long the message waits for the agent before it goes anyway.
    pub timeout: Option<Duration>,
}

/// What became of the message for one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Pasted and (unless `--no-enter`) submitted: `took` from paste to submission; `by`
    /// names another deliverer that got there first (the supervisor, on its tick).
    Delivered { took: Duration, by: Option<String> },
    /// Tried and failed (see the audit log for where the text was kept).
    Failed(String),
    /// Still queued after one round (without `wait`), and why.
    Queued(String),
    /// Still queued when `wait` ran out of time.
    TimedOut(Duration),
}

/// What [`send`] did, beyond each target's outcome (reported as it happens).
#[derive(Clone, Debug, Default)]
pub struct SendReport {
    /// Targets the ACL refused among `all` / `role:ROLE` (skipped, not fatal).
    pub skipped: Vec<String>,
    /// Queue files that could not be read, set aside (see [`Corrupt`]).
    pub corrupt: Vec<(String, Corrupt)>,
    pub outcomes: Vec<(String, Outcome)>,
}

impl SendReport {
    /// Whether any target failed or timed out (`orch send` exits 1).
    pub fn failed(&self) -> bool {
        self.outcomes
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Failed(_) | Outcome::TimedOut(_)))
    }
}

/// Sends `req` from `sender` in `layout`'s session. `outcome` is called for each target
/// as soon as its outcome is known. A target that matches nothing, or a refused explicit
/// target, is bad input; refusals among several targets are skipped (and recorded).
pub fn send(
    layout: &Layout,
    tmux: &Tmux,
    session_dir: &Path,
    sender: Sender<'_>,
    req: &SendRequest<'_>,
    mut outcome: impl FnMut(&str, &Outcome),
) -> Result<SendReport> {
    let session = layout.session.as_str();
    let mut rec = Recorder::open(session_dir)?;
    let queue = Queue::new(session_dir);
    let panes = tmux.list_panes()?;
    let from = sender.name().to_owned();
    let mut report = SendReport::default();

    // Targets, and the ACL.
    let agents = known_agents(layout, &panes);
    let explicit = req.target != "all" && !req.target.starts_with("role:");
    let candidates: Vec<&(String, String)> = if req.target == "all" {
        agents.iter().filter(|(n, _)| *n != from).collect()
    } else if let Some(role) = req.target.strip_prefix("role:") {
        agents
            .iter()
            .filter(|(n, r)| r == role && *n != from)
            .collect()
    } else {
        agents.iter().filter(|(n, _)| *n == req.target).collect()
    };
    if candidates.is_empty() {
        let names: Vec<&str> = agents.iter().map(|(n, _)| n.as_str()).collect();
        return Err(BadInput(format!(
            "no agent matches {:?} in session {session}; use an agent name ({}), role:ROLE, or all",
            req.target,
            names.join(", ")
        ))
        .into());
    }
    let mut targets = Vec::new();
    for (name, role) in candidates {
        match acl::check(layout.messaging.acl, sender, name, role) {
            Ok(()) => targets.push(name.clone()),
            Err(refusal) => {
                let mut f = Map::new();
                f.insert("from".into(), from.clone().into());
                f.insert("reason".into(), refusal.0.clone().into());
                rec.record(EventKind::MessageRefused, Some(name), f)?;
                report.skipped.push(refusal.0);
            }
        }
    }
    if let Some(first) = report.skipped.first()
        && (explicit || targets.is_empty())
    {
        return Err(BadInput(first.clone()).into());
    }

    // Queued for every target (in parallel: each is its own folder and fsync), then
    // audited in one append; a message the audit log does not know of is not sent.
    let how = Delivery {
        enter: req.enter,
        when_ready: req.when_idle,
        ready_within: req.timeout.filter(|_| req.when_idle),
    };
    let ours = queue_all(&queue, &mut rec, &from, &targets, req, how)?;

    let timeout = req
        .timeout
        .unwrap_or(DEFAULT_WAIT)
        .min(crate::layout::MAX_DURATION);
    let deadline = Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(Instant::now);
    let ios: HashMap<&str, AgentIo> = targets
        .iter()
        .map(|t| {
            let spec = layout.agents.iter().find(|a| a.name.as_str() == t);
            (t.as_str(), AgentIo::of(spec))
        })
        .collect();
    // Since when each target's screen has read `unknown`, for the 30 s fallback.
    let mut unknown_since: HashMap<String, Instant> = HashMap::new();
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let opts = Options::default();
    let mut first_round = true;
    let mut panes = panes;
    loop {
        if !first_round {
            panes = tmux.list_panes()?;
        }
        let round: Vec<&String> = targets.iter().filter(|t| !reported.contains(*t)).collect();
        // The first time, every target whose queue holds just this message gets it in
        // one go (a few tmux processes for any number of agents); the rest, and later
        // rounds, one agent at a time, 16 at once.
        let mut together: Vec<Option<Drained>> = Vec::new();
        if first_round && round.len() > 1 {
            let items: Vec<_> = round
                .iter()
                .filter_map(|t| {
                    let msg = ours.iter().find(|m| &m.to == *t)?;
                    let io = ios.get(t.as_str())?;
                    Some((t.as_str(), pane_of(&panes, session, t), msg, &io.style))
                })
                .collect();
            if items.len() == round.len() {
                together = drain_together(tmux, &queue, &mut rec, &items, opts)?;
            }
        }
        together.resize_with(round.len(), || None);
        // What each waiting agent is doing, read from its screen when a message waits
        // for it to be ready (the supervisor knows this from hooks too; a command looks).
        let readings: Vec<(Activity, Duration)> = round
            .iter()
            .map(|t| {
                let wants_ready = queue
                    .pending(t)
                    .map_or(true, |p| p.iter().any(|m| m.when_ready));
                let activity = match (wants_ready, ios.get(t.as_str())) {
                    (true, Some(io)) => {
                        read_activity(tmux, &io.profile, pane_of(&panes, session, t))
                    }
                    _ => Activity::Unknown,
                };
                let unknown_for = if activity == Activity::Unknown {
                    unknown_since
                        .entry((*t).clone())
                        .or_insert_with(Instant::now)
                        .elapsed()
                } else {
                    unknown_since.remove(*t);
                    Duration::ZERO
                };
                (activity, unknown_for)
            })
            .collect();
        let alone: Vec<usize> = (0..round.len())
            .filter(|&i| together[i].is_none())
            .collect();
        let mut singles = in_parallel(&alone, |&i| {
            let t = round[i].as_str();
            let io = ios
                .get(t)
                .ok_or_else(|| anyhow::anyhow!("no such target {t}"))?;
            let mut rec = Recorder::open(session_dir)?;
            let target = Target {
                agent: t,
                pane: pane_of(&panes, session, t),
                style: &io.style,
                profile: &io.profile,
                activity: readings[i].0,
                unknown_for: readings[i].1,
            };
            drain_agent(tmux, &queue, &mut rec, &target, opts)
        })
        .into_iter();
        for (t, slot) in round.iter().zip(together) {
            let d = match slot {
                Some(d) => d,
                None => singles.next().unwrap_or_else(|| Ok(Drained::default()))?,
            };
            for c in d.corrupt.iter().cloned() {
                report.corrupt.push(((*t).clone(), c));
            }
            let Some(o) = outcome_of(&queue, session_dir, &ours, t, d, first_round || !req.wait)
            else {
                continue;
            };
            if req.wait && matches!(o, Outcome::Queued(_)) {
                continue; // a later round tells
            }
            outcome(t, &o);
            report.outcomes.push(((*t).clone(), o));
            reported.insert((*t).clone());
        }
        first_round = false;
        if reported.len() == targets.len() || !req.wait {
            break;
        }
        if Instant::now() >= deadline {
            for t in targets.iter().filter(|t| !reported.contains(*t)) {
                let o = Outcome::TimedOut(timeout);
                outcome(t, &o);
                report.outcomes.push((t.clone(), o));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(report)
}

/// The layout's agents and roles, plus any orch pane of the session it does not know.
fn known_agents(layout: &Layout, panes: &[Pane]) -> Vec<(String, String)> {
    let session = layout.session.as_str();
    let mut agents: Vec<(String, String)> = layout
        .agents
        .iter()
        .map(|a| (a.name.as_str().to_owned(), a.role.as_str().to_owned()))
        .collect();
    for p in panes.iter().filter(|p| p.session == session) {
        if let (Some(a), Some(r)) = (&p.agent, &p.role)
            && !agents.iter().any(|(n, _)| n == a)
        {
            agents.push((a.clone(), r.clone()));
        }
    }
    agents
}

/// Queues the message for every target and audits them in one append; on any failure
/// nothing stays queued.
fn queue_all(
    queue: &Queue,
    rec: &mut Recorder,
    from: &str,
    targets: &[String],
    req: &SendRequest<'_>,
    how: Delivery,
) -> Result<Vec<Message>> {
    let pushed = in_parallel(targets, |t| {
        queue.push_with(from, t, req.priority, req.text, how)
    });
    let mut ours: Vec<Message> = Vec::new();
    let mut push_error = None;
    for r in pushed {
        match r {
            Ok(m) => ours.push(m),
            Err(e) => push_error = push_error.or(Some(e)),
        }
    }
    if let Some(e) = push_error {
        for m in &ours {
            let _ = queue.remove(m);
        }
        return Err(e.context("queueing the message; nothing was sent"));
    }
    let digest = crate::digest::sha256_hex(req.text.as_bytes());
    let items = ours
        .iter()
        .map(|msg| {
            let mut f = Map::new();
            f.insert("id".into(), msg.id.clone().into());
            f.insert("from".into(), from.into());
            f.insert("priority".into(), req.priority.as_str().into());
            f.insert("bytes".into(), req.text.len().into());
            f.insert("sha256".into(), Value::String(digest.clone()));
            (msg.to.clone(), f)
        })
        .collect();
    if let Err(e) = rec.record_many(EventKind::MessageQueued, items) {
        for m in &ours {
            let _ = queue.remove(m);
        }
        return Err(e.context("the audit log cannot be written, so nothing was sent"));
    }
    Ok(ours)
}

/// What a drain of `agent` means for our message to it; `None` while it waits and the
/// caller does not want that said yet.
fn outcome_of(
    queue: &Queue,
    session_dir: &Path,
    ours: &[Message],
    agent: &str,
    d: Drained,
    say_queued: bool,
) -> Option<Outcome> {
    let mine: Vec<&Message> = ours.iter().filter(|m| m.to == agent).collect();
    if let Some((m, reason)) = &d.failed
        && mine.iter().any(|o| o.id == m.id)
    {
        return Some(Outcome::Failed(reason.clone()));
    }
    if mine.iter().all(|m| !queue.contains(m)) {
        let took = d
            .delivered
            .iter()
            .find(|(m, _)| mine.iter().any(|o| o.id == m.id))
            .map(|(_, x)| x.took);
        return Some(match took {
            Some(took) => Outcome::Delivered { took, by: None },
            // Another deliverer (the supervisor, on its tick) got there first.
            None => {
                let line = mine.first().and_then(|m| {
                    super::audit::recent(&session_dir.join(super::AUDIT_FILE), "delivered", &m.id)
                });
                let took = line
                    .and_then(|v| v["deliver_ms"].as_u64())
                    .map(Duration::from_millis)
                    .unwrap_or_default();
                Outcome::Delivered {
                    took,
                    by: Some("the supervisor".to_owned()),
                }
            }
        });
    }
    if !say_queued {
        return None;
    }
    let why = d
        .waiting
        .map(|(w, n)| format!("the pane is {w}; {n} message(s) waiting"))
        .or_else(|| {
            d.failed
                .map(|(_, r)| format!("an earlier message failed: {r}"))
        })
        .unwrap_or_else(|| "waiting".into());
    Some(Outcome::Queued(why))
}

/// What the agent's screen shows it doing, read with its profile's patterns.
fn read_activity(tmux: &Tmux, profile: &ActivityProfile, pane: Option<&Pane>) -> Activity {
    let Some(pane) = pane.filter(|p| !p.dead) else {
        return Activity::Unknown;
    };
    tmux.capture_screen(&pane.id)
        .map_or(Activity::Unknown, |screen| profile.classify(&screen))
}
