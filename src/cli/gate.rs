//! `orch check [--rev REV] [--json]` and `orch rollback list|show|approve|reject|undo`:
//! thin. With a supervisor running, the call goes to its gate over the control socket;
//! without one, the command runs the same gate itself, holding the session's supervisor
//! lock meanwhile so no supervisor's gate works on the same state at the same time.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;

use super::{Context, out};
use crate::gate::service::{self, Answer, Call};
use crate::gate::{BranchReport, CheckReport, Config, Gate, Host, Outcome, Proposal};
use crate::git::repo::short;
use crate::layout::Layout;
use crate::state::StateDir;
use crate::supervisor::control::{Reply, Request, request_waiting};
use crate::supervisor::event::{Event, EventKind};
use crate::supervisor::store::{Journal, Lock, LockHeld};
use crate::tmux::Tmux;

#[derive(Debug, Subcommand)]
pub(super) enum RollbackCommand {
    /// Every proposal, oldest first: id, status, risk, kind, commits, agents, files
    List {
        /// One JSON array (SPEC §4 shape)
        #[arg(long)]
        json: bool,
    },
    /// A proposal in full: its commits with subjects and agents, the files it changes
    /// with +/- counts, the failing check's last lines
    Show {
        /// A proposal id, or a unique start of one
        id: String,
        /// Also print the diff the repair applies
        #[arg(long)]
        diff: bool,
    },
    /// Carry out a pending proposal now (snapshot, backup ref and saved work first)
    Approve { id: String },
    /// Never carry out this proposal (nor propose it again for the same commits)
    Reject { id: String },
    /// Put the branch and the saved uncommitted work back as before the rollback
    Undo { id: String },
}

pub(super) fn run_check(ctx: &Context, rev: Option<String>, json: bool) -> Result<ExitCode> {
    let answer = call(ctx, Call::Check { rev }, !json)?;
    match answer {
        Answer::Checked { check } => {
            if json {
                out!("{}", serde_json::to_string(&check)?)?;
            } else {
                print_check(&check, None)?;
            }
            Ok(exit_for(check.outcome == Outcome::Green))
        }
        Answer::Scanned { branches } => {
            let green = branches.iter().all(|b| b.outcome == Some(Outcome::Green));
            if json {
                let v = serde_json::json!({
                    "verdict": if green { "green" } else { "red" },
                    "branches": branches,
                });
                out!("{v}")?;
            } else {
                for b in &branches {
                    print_branch(b)?;
                }
                if branches.is_empty() {
                    out!("no watched branch exists yet")?;
                }
            }
            Ok(exit_for(green))
        }
        other => bail!("unexpected answer from the gate: {other:?}"),
    }
}

fn exit_for(green: bool) -> ExitCode {
    if green {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub(super) fn run_rollback(ctx: &Context, command: RollbackCommand) -> Result<ExitCode> {
    match command {
        RollbackCommand::List { json } => {
            let Answer::List { proposals } = call(ctx, Call::List, false)? else {
                bail!("unexpected answer from the gate");
            };
            if json {
                out!("{}", serde_json::to_string(&proposals)?)?;
            } else {
                print_list(&proposals)?;
            }
        }
        RollbackCommand::Show { id, diff } => {
            let Answer::Show { details } = call(ctx, Call::Show { id, diff }, false)? else {
                bail!("unexpected answer from the gate");
            };
            print_details(&details)?;
        }
        RollbackCommand::Approve { id } => {
            let Answer::Approved { executed, recheck } = call(ctx, Call::Approve { id }, true)?
            else {
                bail!("unexpected answer from the gate");
            };
            out!(
                "rollback {} ({}) executed: {} moved {} -> {}; the old tip is kept in {}",
                executed.id,
                executed.kind.as_str(),
                executed.branch,
                short(&executed.from),
                short(&executed.to),
                executed.backup_ref
            )?;
            if executed.replanned > 0 {
                out!(
                    "  {} moved meanwhile: the plan was made again on its new tip ({} time(s)), nothing was overwritten",
                    executed.branch,
                    executed.replanned
                )?;
            }
            for n in &executed.notes {
                out!(
                    "  uncommitted work clashed with the repair and is saved; get it back with: {n}"
                )?;
            }
            match recheck {
                Some(r) => print_branch(&r)?,
                None => out!(
                    "the supervisor checks {} again now; `orch events` shows the result",
                    executed.branch
                )?,
            }
        }
        RollbackCommand::Reject { id } => {
            let Answer::Rejected { proposal } = call(ctx, Call::Reject { id }, false)? else {
                bail!("unexpected answer from the gate");
            };
            out!(
                "proposal {} ({} of {}) rejected; it will not be proposed again for these commits",
                proposal.id,
                proposal.kind.as_str(),
                shorts(&proposal.commits)
            )?;
        }
        RollbackCommand::Undo { id } => {
            let Answer::Undone { undone } = call(ctx, Call::Undo { id }, false)? else {
                bail!("unexpected answer from the gate");
            };
            out!(
                "rollback {} undone: {} is back at {} (it was at {})",
                undone.id,
                undone.branch,
                short(&undone.to),
                short(&undone.from)
            )?;
            for n in &undone.notes {
                out!("  {n}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `c` in the supervisor's gate if one runs, else here under the session lock.
pub(super) fn call(ctx: &Context, c: Call, progress: bool) -> Result<Answer> {
    let layout = ctx.layout()?;
    if layout.quality.is_none() {
        return Err(crate::gate::BadInput::NoQuality.into());
    }
    let state = ctx.state()?;
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
    let gate = Gate::open(Config::from_layout(&layout, &dir)?)?;
    let layout_file = match ctx.layout_source()? {
        crate::layout::LayoutSource::File(p) => Some(p),
        crate::layout::LayoutSource::Builtin(_) => None,
    };
    let mut host = CliHost {
        layout: &layout,
        tmux: ctx.tmux(),
        state,
        dir: dir.clone(),
        layout_file,
        journal: Journal::open(&dir)?,
        progress,
    };
    service::call(&gate, c, &mut host, true)
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
        Err(super::BadInput(error).into())
    } else {
        Err(anyhow::anyhow!(error))
    }
}

/// The gate's host in a command: events to the journal (and progress to stderr), the
/// snapshot taken here, messages delivered here, agents restarted here.
struct CliHost<'a> {
    layout: &'a Layout,
    tmux: Tmux,
    state: StateDir,
    dir: PathBuf,
    layout_file: Option<PathBuf>,
    journal: Journal,
    progress: bool,
}

impl Host for CliHost<'_> {
    fn emit(&mut self, event: Event) {
        if let Err(e) = self.journal.append(&event, std::time::SystemTime::now()) {
            tracing::warn!("journaling a gate event: {e:#}");
        }
        if self.progress
            && let Some(line) = progress_line(&event)
        {
            eprintln!("{line}");
        }
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

/// What a person sees of an event while `orch check` works.
fn progress_line(e: &Event) -> Option<String> {
    let f = |k: &str| e.fields.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let commit = short(f("commit")).to_owned();
    let branch = e
        .fields
        .get("branch")
        .and_then(|v| v.as_str())
        .map(|b| format!("{b}: "))
        .unwrap_or_default();
    Some(match e.kind {
        EventKind::CheckStarted => format!("{branch}checking {commit} ({})…", f("purpose")),
        EventKind::CheckFlaky => {
            format!("{branch}{commit} failed, then passed: flaky, nothing is blamed")
        }
        EventKind::RollbackProposed => format!(
            "{branch}proposed {} {} ({}): {}",
            f("id"),
            f("kind"),
            f("risk"),
            f("why")
        ),
        EventKind::Escalated => format!("{branch}escalated: {}", f("reason")),
        _ => return None,
    })
}

fn print_check(c: &CheckReport, indent: Option<&str>) -> std::io::Result<()> {
    let pad = indent.unwrap_or("");
    let verdict = match c.outcome {
        Outcome::Green => "green",
        Outcome::Red => "red",
        Outcome::Untestable => "cannot be tested",
    };
    let mut how = vec![c.reason.clone()];
    if c.cached {
        how.push("known result for this tree, nothing ran".into());
    } else {
        how.push(format!("{:.1} s", c.duration_ms as f64 / 1000.0));
    }
    if c.flaky {
        how.push("flaky: red first, green when run again".into());
    }
    out!(
        "{pad}{} {verdict} ({}): {}",
        short(&c.commit),
        how.join(", "),
        c.subject
    )?;
    if c.outcome != Outcome::Green {
        let start = c.output_tail.len().saturating_sub(8);
        for l in &c.output_tail[start..] {
            out!("{pad}    | {l}")?;
        }
    }
    Ok(())
}

fn print_branch(b: &BranchReport) -> std::io::Result<()> {
    match &b.check {
        Some(c) => {
            out!("{}:", b.branch)?;
            print_check(c, Some("  "))?;
        }
        None => out!(
            "{}: {} evaluated before, nothing new",
            b.branch,
            b.tip.as_deref().map(short).unwrap_or("tip")
        )?,
    }
    if b.runs > 0 {
        out!("  check runs: {}", b.runs)?;
    }
    if !b.culprits.is_empty() {
        out!("  culprit(s): {}", shorts(&b.culprits))?;
    }
    for id in &b.proposed {
        out!("  proposal {id} (see `orch rollback show {id}`)")?;
    }
    for id in &b.executed {
        out!("  rollback {id} executed (`orch rollback undo {id}` reverses it)")?;
    }
    for n in &b.notes {
        out!("  {n}")?;
    }
    if !b.executed.is_empty() || b.check.as_ref().map(|c| c.outcome) != b.outcome {
        let now = match b.outcome {
            Some(Outcome::Green) => "green",
            Some(Outcome::Red) => "red",
            Some(Outcome::Untestable) => "untestable",
            None => "unknown",
        };
        out!(
            "  {} is {now} now at {}",
            b.branch,
            b.tip.as_deref().map(short).unwrap_or("?")
        )?;
    }
    Ok(())
}

fn shorts(ids: &[String]) -> String {
    ids.iter().map(|c| short(c)).collect::<Vec<_>>().join(", ")
}

fn print_list(proposals: &[Proposal]) -> std::io::Result<()> {
    if proposals.is_empty() {
        return out!("no rollback proposals");
    }
    out!(
        "{:<8}  {:<8}  {:<8}  {:<13}  {:<14}  {:<16}  {:<14}  FILES",
        "ID",
        "STATUS",
        "RISK",
        "KIND",
        "BRANCH",
        "COMMITS",
        "AGENTS"
    )?;
    for p in proposals {
        let agents = if p.agents.is_empty() {
            "?".to_owned()
        } else {
            p.agents.join(",")
        };
        out!(
            "{:<8}  {:<8}  {:<8}  {:<13}  {:<14}  {:<16}  {:<14}  {}",
            p.id,
            p.status.as_str(),
            p.risk.as_str(),
            p.kind.as_str(),
            p.branch,
            shorts(&p.commits),
            agents,
            p.files.join(" ")
        )?;
        if let Some(w) = &p.waiting {
            out!("          waiting: {w}")?;
        }
    }
    Ok(())
}

fn print_details(d: &crate::gate::ProposalDetails) -> std::io::Result<()> {
    let p = &d.proposal;
    out!(
        "proposal {}: {} (risk {}), {}",
        p.id,
        p.kind.as_str(),
        p.risk.as_str(),
        p.status.as_str()
    )?;
    out!("  {}", p.why)?;
    if let Some(w) = &p.waiting {
        out!("  waiting: {w}")?;
    }
    if let Some(c) = &p.closed {
        out!("  closed: {c}")?;
    }
    out!(
        "branch {}: red at {}, last green {}, the repair moves it to {}",
        p.branch,
        short(&p.tip),
        short(&p.green),
        short(&p.new_tip)
    )?;
    if let Some(e) = &p.execution {
        out!(
            "executed {} ({}): {} -> {}{}",
            e.at,
            if e.auto { "automatically" } else { "approved" },
            short(&e.from),
            short(&e.to),
            e.undone_at
                .as_deref()
                .map(|u| format!(", undone {u}"))
                .unwrap_or_default()
        )?;
        for c in &e.checkouts {
            if let Some(s) = &c.saved {
                out!(
                    "  uncommitted work of {} saved in {}",
                    c.path.display(),
                    s.reference
                )?;
            }
        }
    }
    out!("backup ref: {}", p.backup_ref)?;
    out!("commits:")?;
    for c in &d.commits {
        out!(
            "  {}  {:<12}  {}",
            short(&c.id),
            c.agent.as_deref().unwrap_or("(unknown)"),
            c.subject
        )?;
    }
    out!("files the repair changes:")?;
    for f in &d.changes {
        out!("  {:<40}  +{} -{}", f.path, f.added, f.deleted)?;
    }
    out!("the check failed ({}):", p.failure)?;
    for l in &p.output_tail {
        out!("  | {l}")?;
    }
    if let Some(diff) = &d.diff {
        out!("")?;
        use std::io::Write as _;
        std::io::stdout().lock().write_all(diff.as_bytes())?;
    }
    Ok(())
}
