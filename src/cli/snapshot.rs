//! `orch snapshot [list [--json] | show ID]`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::{BadInput, Context, out};
use crate::layout::{LayoutSource, Size};
use crate::snapshot::{self, store};

#[derive(Debug, Subcommand)]
pub(super) enum SnapshotCommand {
    /// Snapshots of the session, oldest first; corrupt ones say why
    List {
        /// One JSON array
        #[arg(long)]
        json: bool,
    },
    /// What a snapshot holds: agents, states, working directories, lines, sizes
    Show {
        /// A snapshot id from `orch snapshot list`, or `latest`
        id: String,
    },
}

pub(super) fn run(ctx: &Context, command: Option<SnapshotCommand>) -> Result<ExitCode> {
    match command {
        None => write(ctx),
        Some(SnapshotCommand::List { json }) => list(ctx, json),
        Some(SnapshotCommand::Show { id }) => show(ctx, &id),
    }
}

/// Takes a snapshot now; the last line printed is its path.
fn write(ctx: &Context) -> Result<ExitCode> {
    let source = ctx.layout_source()?;
    let layout = ctx.layout()?;
    let state = ctx.state()?;
    let layout_file = match &source {
        LayoutSource::File(p) => Some(p.as_path()),
        LayoutSource::Builtin(_) => None,
    };
    let written = snapshot::take_manual(&layout, &ctx.tmux(), &state, layout_file)?;
    out!(
        "snapshot {} of session {}: {}, {} new blob(s) ({}), {} ms",
        written.id,
        layout.session,
        Size(written.bytes),
        written.new_blobs,
        Size(written.new_blob_bytes),
        written.duration.as_millis()
    )?;
    for id in &written.pruned {
        out!("pruned {id}")?;
    }
    out!("{}", written.path.display())?;
    Ok(ExitCode::SUCCESS)
}

fn list(ctx: &Context, json: bool) -> Result<ExitCode> {
    let layout = ctx.layout()?;
    let dir = ctx.state()?.root().join(layout.session.as_str());
    let listed = store::list(&dir)?;
    if json {
        out!("{}", serde_json::to_string(&listed)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if listed.is_empty() {
        out!("no snapshots of session {}", layout.session)?;
        return Ok(ExitCode::SUCCESS);
    }
    out!(
        "{:<26}  {:<24}  {:<12}  {:>6}  {:>10}  STATUS",
        "ID",
        "CREATED",
        "REASON",
        "AGENTS",
        "SIZE"
    )?;
    for l in &listed {
        let status = match &l.ok {
            Ok(()) => "ok".to_owned(),
            Err(why) => format!("CORRUPT: {why}"),
        };
        out!(
            "{:<26}  {:<24}  {:<12}  {:>6}  {:>10}  {status}",
            l.id,
            l.created,
            l.reason,
            l.agents,
            Size(l.bytes).to_string()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn show(ctx: &Context, id: &str) -> Result<ExitCode> {
    let layout = ctx.layout()?;
    let dir = ctx.state()?.root().join(layout.session.as_str());
    if id != "latest"
        && !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
    {
        return Err(BadInput(format!(
            "{id:?} is not a snapshot id; see `orch snapshot list`"
        ))
        .into());
    }
    let loaded =
        store::load(&dir, id).map_err(|e| match e.downcast::<store::NoSuchSnapshot>() {
            Ok(missing) => BadInput(missing.to_string()).into(),
            Err(e) => e,
        })?;
    for (skipped, why) in &loaded.skipped {
        out!("skipped corrupt snapshot {skipped}: {why}")?;
    }
    let s = &loaded.snapshot;
    out!("snapshot {} of session {}", s.id, s.session)?;
    out!("created  {}  reason {}", s.created, s.reason)?;
    if let Some(file) = &s.layout_file {
        out!("layout   {file}")?;
    }
    out!(
        "window   {} {}x{}  {}",
        s.window.name,
        s.window.width,
        s.window.height,
        s.window.layout
    )?;
    out!(
        "{:<14}  {:<10}  {:<5}  {:<10}  {:>4}  {:<9}  {:>8}  {:>10}  {:>10}  CWD",
        "AGENT",
        "ROLE",
        "PANE",
        "STATE",
        "EXIT",
        "ACTIVITY",
        "RESTARTS",
        "LINES",
        "SIZE"
    )?;
    let mut total = 0;
    for a in &s.agents {
        let (lines, bytes) = a.scrollback.as_ref().map_or((0, 0), |b| (b.lines, b.bytes));
        let alt = a.alternate.as_ref().map_or(0, |b| b.bytes);
        total += bytes + alt;
        let lines = if a.alternate.is_some() {
            format!("{lines}+alt")
        } else {
            lines.to_string()
        };
        out!(
            "{:<14}  {:<10}  {:<5}  {:<10}  {:>4}  {:<9}  {:>8}  {:>10}  {:>10}  {}",
            a.name,
            a.role,
            a.pane.as_deref().unwrap_or("-"),
            a.state,
            a.exit_status
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            a.activity,
            a.restarts,
            lines,
            Size(bytes + alt).to_string(),
            a.cwd.as_deref().unwrap_or("-")
        )?;
    }
    let doc = std::fs::metadata(&loaded.path).map_or(0, |m| m.len());
    out!(
        "{} agent(s); pane contents {}, document {}",
        s.agents.len(),
        Size(total),
        Size(doc)
    )?;
    out!("{}", loaded.path.display())?;
    Ok(ExitCode::SUCCESS)
}
