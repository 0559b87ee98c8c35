//! `orch send TARGET [MESSAGE...]` and `orch audit verify`.
//!
//! Inside a pane no flags are needed: the session comes from `ORCH_SESSION` and the
//! sender from `ORCH_AGENT`; outside, the sender is `user`.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Map, Value};

use super::{BadInput, Context, out};
use crate::layout::{Layout, TmuxName};
use crate::messaging::acl::{self, Sender};
use crate::messaging::audit;
use crate::messaging::deliver::Options;
use crate::messaging::drain::{
    Recorder, drain_agent, drain_together, in_parallel as parallel, pane_of,
};
use crate::messaging::queue::{Delivery, Message, Priority, Queue};
use crate::supervisor::event::EventKind;
use crate::tmux::paste_safe;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(super) enum PriorityArg {
    High,
    Normal,
    Low,
}

#[derive(Debug, clap::Args)]
pub(super) struct SendArgs {
    /// An agent's name, `role:ROLE` (e.g. role:WORKER), or `all`
    target: String,
    /// The message (words are joined with spaces); `-` reads it from stdin. Options go
    /// before TARGET: everything after it is message text, even `-n`
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    message: Vec<String>,
    /// Read the message from FILE
    #[arg(long, value_name = "FILE", conflicts_with = "message")]
    file: Option<PathBuf>,
    /// Delivery order among queued messages
    #[arg(long, value_enum, default_value = "normal")]
    priority: PriorityArg,
    /// Paste the text without pressing Enter
    #[arg(long)]
    no_enter: bool,
    /// `idle`: deliver once the agent's screen shows it idle or waiting for input
    /// (delivered anyway after 30 s)
    #[arg(long, value_enum, default_value = "now")]
    when: WhenArg,
    /// Wait until every message is delivered (exit 1 on failure or timeout)
    #[arg(long)]
    wait: bool,
    /// How long --wait waits
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum WhenArg {
    Now,
    Idle,
}

#[derive(Debug, clap::Subcommand)]
pub(super) enum AuditCommand {
    /// Check the hash chain of audit.jsonl: exit 0 if intact, 1 naming the first broken line
    Verify,
}

/// The layout, with the session of `--session`, else of `ORCH_SESSION` (inside a pane).
fn session_layout(ctx: &Context) -> Result<Layout> {
    let mut layout = ctx.layout()?;
    if ctx.session.is_none()
        && let Some(s) = env_nonempty("ORCH_SESSION")
    {
        layout.session = TmuxName::new(s).map_err(|e| BadInput(format!("ORCH_SESSION: {e}")))?;
    }
    Ok(layout)
}

fn env_nonempty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn read_text(args: &SendArgs) -> Result<String> {
    let raw = if let Some(file) = &args.file {
        std::fs::read_to_string(file)
            .with_context(|| format!("reading the message from {}", file.display()))?
    } else if args.message.len() == 1 && args.message[0] == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the message from stdin")?;
        s
    } else {
        args.message.join(" ")
    };
    let text = paste_safe(&raw);
    if text.trim().is_empty() {
        bail!(BadInput(
            "the message is empty; give it as arguments, with --file FILE, or `-` for stdin".into()
        ));
    }
    Ok(text)
}

pub(super) fn run(ctx: &Context, args: SendArgs) -> Result<ExitCode> {
    let text = read_text(&args)?;
    let layout = session_layout(ctx)?;
    let session = layout.session.as_str().to_owned();
    let tmux = ctx.tmux();
    let dir = ctx.state()?.session_dir(&session)?;
    let mut rec = Recorder::open(&dir)?;
    let queue = Queue::new(&dir);

    // Agents and roles: the layout's, plus any orch pane of the session it does not know.
    let panes = tmux.list_panes()?;
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
    let role_of = |name: &str| {
        agents
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
    };

    let sender_name = env_nonempty("ORCH_AGENT");
    let sender_role = match &sender_name {
        None => None,
        Some(n) => Some(role_of(n).or_else(|| env_nonempty("ORCH_ROLE")).ok_or_else(|| {
            BadInput(format!(
                "ORCH_AGENT={n} is not an agent of session {session}; unset it to send as the user"
            ))
        })?),
    };
    let sender = match (&sender_name, &sender_role) {
        (Some(name), Some(role)) => Sender::Agent { name, role },
        _ => Sender::User,
    };
    let from = sender.name().to_owned();

    // Targets.
    let explicit = args.target != "all" && !args.target.starts_with("role:");
    let candidates: Vec<&(String, String)> = if args.target == "all" {
        agents.iter().filter(|(n, _)| *n != from).collect()
    } else if let Some(role) = args.target.strip_prefix("role:") {
        agents
            .iter()
            .filter(|(n, r)| r == role && *n != from)
            .collect()
    } else {
        agents.iter().filter(|(n, _)| *n == args.target).collect()
    };
    if candidates.is_empty() {
        let names: Vec<&str> = agents.iter().map(|(n, _)| n.as_str()).collect();
        bail!(BadInput(format!(
            "no agent matches {:?} in session {session}; use an agent name ({}), role:ROLE, or all",
            args.target,
            names.join(", ")
        )));
    }
    let mut targets = Vec::new();
    let mut refusals = Vec::new();
    for (name, role) in candidates {
        match acl::check(layout.messaging.acl, sender, name, role) {
            Ok(()) => targets.push(name.clone()),
            Err(refusal) => {
                let mut f = Map::new();
                f.insert("from".into(), from.clone().into());
                f.insert("reason".into(), refusal.0.clone().into());
                rec.record(EventKind::MessageRefused, Some(name), f)?;
                refusals.push(refusal.0);
            }
        }
    }
    if let Some(first) = refusals.first()
        && (explicit || targets.is_empty())
    {
        bail!(BadInput(first.clone()));
    }
    for r in &refusals {
        eprintln!("orch: skipped: {r}");
    }

    // Queue, then deliver what can be delivered now.
    let priority = match args.priority {
        PriorityArg::High => Priority::High,
        PriorityArg::Normal => Priority::Normal,
        PriorityArg::Low => Priority::Low,
    };
    let digest = crate::digest::sha256_hex(text.as_bytes());
    let how = Delivery {
        enter: !args.no_enter,
        when_ready: args.when == WhenArg::Idle,
    };
    // Queued for every target (in parallel: each is its own folder and fsync), then
    // audited in one append; a message the audit log does not know of is not sent.
    let pushed = parallel(&targets, |t| {
        queue.push_with(&from, t, priority, &text, how)
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
    let items = ours
        .iter()
        .map(|msg| {
            let mut f = Map::new();
            f.insert("id".into(), msg.id.clone().into());
            f.insert("from".into(), from.clone().into());
            f.insert("priority".into(), priority.as_str().into());
            f.insert("bytes".into(), text.len().into());
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

    let opts = Options::default();
    let deadline = Instant::now()
        .checked_add(args.timeout.min(crate::layout::MAX_DURATION))
        .unwrap_or_else(Instant::now);
    let mut failed = false;
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let mut first_round = true;
    loop {
        let panes = if first_round {
            panes.clone()
        } else {
            tmux.list_panes()?
        };
        let round: Vec<String> = targets
            .iter()
            .filter(|t| !reported.contains(*t))
            .cloned()
            .collect();
        // The first time, every target whose queue holds just this message gets it in
        // one go (a few tmux processes for any number of agents); the rest, and later
        // rounds, one agent at a time, 16 at once.
        let mut together: Vec<Option<crate::messaging::drain::Drained>> = Vec::new();
        if first_round && round.len() > 1 {
            let triples: Vec<(&str, Option<&crate::tmux::Pane>, &Message)> = round
                .iter()
                .filter_map(|t| {
                    let msg = ours.iter().find(|m| &m.to == t)?;
                    Some((t.as_str(), pane_of(&panes, &session, t), msg))
                })
                .collect();
            if triples.len() == round.len() {
                together = drain_together(&tmux, &queue, &mut rec, &triples, opts)?;
            }
        }
        together.resize_with(round.len(), || None);
        let alone: Vec<usize> = (0..round.len())
            .filter(|&i| together[i].is_none())
            .collect();
        let mut singles = parallel(&alone, |&i| {
            let t = &round[i];
            let mut rec = Recorder::open(&dir)?;
            let pane = pane_of(&panes, &session, t);
            // The screen is read only when a message waits for the agent to look ready.
            let wants_ready = queue
                .pending(t)
                .map_or(true, |p| p.iter().any(|m| m.when_ready));
            let ready = wants_ready && looks_ready(&tmux, &layout, t, pane);
            drain_agent(&tmux, &queue, &mut rec, pane, t, ready, opts)
        })
        .into_iter();
        let mut drained = Vec::with_capacity(round.len());
        for slot in together {
            drained.push(match slot {
                Some(d) => Ok(d),
                None => singles.next().unwrap_or_else(|| Ok(Default::default())),
            });
        }
        for (t, d) in round.iter().zip(drained) {
            let d = d?;
            for c in &d.corrupt {
                let what = match &c.recovered_from {
                    Some(id) => format!("its message was queued again from snapshot {id}"),
                    None => "no snapshot holds its message".to_owned(),
                };
                eprintln!(
                    "orch: {t}: a queued message could not be read ({}); moved to {}; {what}",
                    c.error,
                    c.moved_to.display()
                );
            }
            let mine: Vec<_> = ours.iter().filter(|m| &m.to == t).collect();
            let delivered_ms: Vec<u128> = d
                .delivered
                .iter()
                .filter(|(m, _)| mine.iter().any(|o| o.id == m.id))
                .map(|(_, x)| x.took.as_millis())
                .collect();
            if let Some((m, reason)) = &d.failed
                && mine.iter().any(|o| o.id == m.id)
            {
                out!("{t}: failed: {reason}")?;
                failed = true;
                reported.insert(t.clone());
            } else if mine.iter().all(|m| !queue.contains(m)) {
                let ms = delivered_ms.first().copied().unwrap_or(0);
                out!("{t}: delivered ({ms} ms)")?;
                reported.insert(t.clone());
            } else if first_round || !args.wait {
                let why = d
                    .waiting
                    .map(|(w, n)| format!("the pane is {w}; {n} message(s) waiting"))
                    .or_else(|| {
                        d.failed
                            .map(|(_, r)| format!("an earlier message failed: {r}"))
                    })
                    .unwrap_or_else(|| "waiting".into());
                if !args.wait {
                    out!(
                        "{t}: queued ({why}); it is delivered when the agent runs and is not in copy mode"
                    )?;
                    reported.insert(t.clone());
                }
            }
        }
        first_round = false;
        if reported.len() == targets.len() || !args.wait {
            break;
        }
        if Instant::now() >= deadline {
            for t in targets.iter().filter(|t| !reported.contains(*t)) {
                out!(
                    "{t}: not delivered within {}; the message stays queued",
                    humantime::format_duration(args.timeout)
                )?;
            }
            return Ok(ExitCode::from(1));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub(super) fn run_audit(ctx: &Context, command: AuditCommand) -> Result<ExitCode> {
    match command {
        AuditCommand::Verify => {
            let layout = session_layout(ctx)?;
            let path = ctx
                .state()?
                .root()
                .join(layout.session.as_str())
                .join(crate::messaging::AUDIT_FILE);
            match audit::verify(&path) {
                Ok(v) => {
                    out!("ok: {} intact ({} records)", path.display(), v.records)?;
                    for line in &v.torn {
                        out!(
                            "note: line {line} is a torn write (a crash or a full disk cut it short), closed off by the next record; not tampering"
                        )?;
                    }
                    if v.past_head > 0 {
                        out!(
                            "note: the newest {} record(s) were written while the head ({}) could not be updated",
                            v.past_head,
                            audit::head_path(&path).display()
                        )?;
                    }
                    if v.no_head {
                        out!(
                            "note: no head file ({}): the last record is covered by nothing; the next message writes one",
                            audit::head_path(&path).display()
                        )?;
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(broken) => {
                    eprintln!("orch: {}: {broken}", path.display());
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

/// Whether the agent's screen shows it idle or waiting for input, read with its profile's
/// patterns (the supervisor knows this already; a command has to look).
fn looks_ready(
    tmux: &crate::tmux::Tmux,
    layout: &Layout,
    agent: &str,
    pane: Option<&crate::tmux::Pane>,
) -> bool {
    use crate::monitor::activity::{Activity, ActivityProfile};
    let Some(pane) = pane.filter(|p| !p.dead) else {
        return false;
    };
    let Some(spec) = layout.agents.iter().find(|a| a.name.as_str() == agent) else {
        return false;
    };
    let Ok(screen) = tmux.capture_screen(&pane.id) else {
        return false;
    };
    let o = &spec.activity;
    let base = ActivityProfile::for_profile(spec.profile);
    let profile = base
        .clone()
        .with_overrides(o.working.clone(), o.waiting.clone(), o.idle.clone())
        .unwrap_or(base);
    matches!(
        profile.classify(&screen),
        Activity::Idle | Activity::Waiting
    )
}
