//! `orch check [--rev REV] [--json]` and `orch rollback list|show|approve|reject|undo`:
//! thin: each is one [`crate::gate::session::call`], then lines.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;

use super::{Context, out};
use crate::gate::service::{Answer, Call};
use crate::gate::{BranchReport, CheckReport, Outcome, Proposal};
use crate::git::repo::short;
use crate::supervisor::event::{Event, EventKind};

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

/// Runs `c` through [`crate::gate::session::call`], showing the gate's progress on
/// stderr when asked.
fn call(ctx: &Context, c: Call, progress: bool) -> Result<Answer> {
    let layout = ctx.layout()?;
    let layout_file = match ctx.layout_source()? {
        crate::layout::LayoutSource::File(p) => Some(p),
        crate::layout::LayoutSource::Builtin(_) => None,
    };
    let mut show = |e: &Event| {
        if progress && let Some(line) = progress_line(e) {
            eprintln!("{line}");
        }
    };
    crate::gate::session::call(
        &layout,
        &ctx.tmux(),
        &ctx.state()?,
        layout_file.as_deref(),
        c,
        &mut show,
    )
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
