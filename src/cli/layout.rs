//! `orch layout up | down | validate | list`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Subcommand;

use super::{Context, out};
use crate::layout::{self, BUILTIN, LayoutSource};
use crate::session;
use crate::supervisor::control::{Request, request};
use crate::supervisor::store::supervisor_pid;

#[derive(Debug, Subcommand)]
pub(super) enum LayoutCommand {
    /// Create the session from the layout; creates only what is missing
    Up {
        /// Attach to the session afterwards (switch client when inside tmux)
        #[arg(long)]
        attach: bool,
        /// Do not start the session's supervisor in the background (it restarts agents
        /// that die and delivers queued messages; `orch supervise` runs it in the
        /// foreground instead)
        #[arg(long, env = "ORCH_NO_SUPERVISE", value_parser = clap::builder::FalseyValueParser::new())]
        no_supervise: bool,
    },
    /// Stop every agent (polite signal, grace period, SIGKILL) and kill the session
    Down {
        /// Do not write a final snapshot first
        #[arg(long)]
        no_snapshot: bool,
        /// How long agents get to exit after the polite signal
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        grace: layout::Duration,
    },
    /// Check a layout file: prints `ok`, or FILE:LINE:COL: message lines and exits 2
    Validate {
        /// Layout file (or built-in layout name)
        file: String,
    },
    /// Built-in layouts and ./layouts/*.yaml
    List,
}

fn parse_duration(s: &str) -> Result<layout::Duration, String> {
    s.parse()
}

pub(super) fn run(ctx: &Context, command: LayoutCommand) -> Result<ExitCode> {
    match command {
        LayoutCommand::Up {
            attach,
            no_supervise,
        } => up(ctx, attach, !no_supervise),
        LayoutCommand::Down { grace, no_snapshot } => down(ctx, grace, no_snapshot),
        LayoutCommand::Validate { file } => validate(&file),
        LayoutCommand::List => list(),
    }
}

fn up(ctx: &Context, attach: bool, supervise: bool) -> Result<ExitCode> {
    let layout = ctx.layout()?;
    let _log = ctx.log_to(&layout)?;
    let tmux = ctx.tmux();
    let report = session::up(&layout, &tmux, &ctx.state()?)?;
    let name = layout.session.as_str();
    for note in &report.notes {
        out!("{note}")?;
    }
    // Role instructions wait in the agents' queues until they look ready; the supervisor
    // (or the next `orch send`) delivers them.
    let dir = ctx.state()?.session_dir(layout.session.as_str())?;
    for (agent, _) in &report.created {
        if let Some(spec) = layout.agents.iter().find(|a| a.name.as_str() == agent) {
            crate::messaging::queue_instructions(&dir, spec)?;
        }
    }
    if report.created.is_empty() {
        out!("session {name} already up ({} agents)", report.existing)?;
    } else if report.existing == 0 {
        out!(
            "session {name} up: {} agents on tmux socket {}",
            report.created.len(),
            tmux.socket_name()
        )?;
    } else {
        let names: Vec<&str> = report.created.iter().map(|(a, _)| a.as_str()).collect();
        out!(
            "session {name}: created {} missing pane(s): {}",
            names.len(),
            names.join(", ")
        )?;
    }
    if supervise {
        use crate::supervisor::background::Started;
        match ctx.spawn()?.ensure(&dir).context(
            "starting the supervisor (the session is up; `orch supervise` runs it in the foreground)",
        )? {
            Started::Running(pid) => out!("supervisor (pid {pid}) already runs")?,
            Started::Now(pid) => out!("supervisor (pid {pid}) started in the background")?,
        }
    }
    if attach {
        tmux.attach(name)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn down(ctx: &Context, grace: layout::Duration, no_snapshot: bool) -> Result<ExitCode> {
    let layout = ctx.layout()?;
    let _log = ctx.log_to(&layout)?;
    let tmux = ctx.tmux();
    let state = ctx.state()?;
    let running = tmux
        .list_panes()?
        .iter()
        .any(|p| p.session == layout.session.as_str());
    let dir = state.session_dir(layout.session.as_str())?;
    let supervisor = supervisor_pid(&dir);
    if running && !no_snapshot {
        // The final snapshot comes first: what the agents showed is kept before they stop,
        // with the supervisor's view of them when one runs.
        let reports = supervisor
            .and_then(|_| request(&dir, &Request::Status).ok().flatten())
            .map(|r| r.agents);
        let file = match ctx.layout_source()? {
            layout::LayoutSource::File(p) => Some(p),
            layout::LayoutSource::Builtin(_) => None,
        };
        let written = crate::snapshot::take(
            &layout,
            &tmux,
            &state,
            "layout_down",
            reports.as_deref(),
            file.as_deref(),
        )
        .context("writing the final snapshot (use --no-snapshot to stop without one)")?;
        written.record(&dir, "layout_down")?;
        out!(
            "snapshot {} written: {}",
            written.id,
            written.path.display()
        )?;
    }
    if let Some(pid) = supervisor {
        // A supervisor left running would restart the agents this stops.
        stop_supervisor(&dir, pid)?;
        out!("supervisor (pid {pid}) stopped")?;
    }
    let report = session::down(&layout, &tmux, grace.0)?;
    let name = layout.session.as_str();
    if !report.was_running {
        out!(
            "session {name} is not running on tmux socket {}; nothing to stop",
            tmux.socket_name()
        )?;
    } else if report.killed.is_empty() {
        out!("session {name} stopped ({} panes)", report.panes)?;
    } else {
        out!(
            "session {name} stopped ({} panes); killed after {grace}: {}",
            report.panes,
            report.killed.join(", ")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM to the session's supervisor, then waits until it has released its lock.
fn stop_supervisor(dir: &std::path::Path, pid: u32) -> Result<()> {
    crate::process::signal(
        pid,
        crate::process::Sig::Stop(layout::StopSignal::Terminate),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while supervisor_pid(dir).is_some() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the supervisor (pid {pid}) did not stop within 10 s; stop it with `kill {pid}` and run `orch layout down` again"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

fn validate(file: &str) -> Result<ExitCode> {
    let cwd = std::env::current_dir()?;
    let source = layout::resolve_source(Some(file), &cwd)?;
    layout::load(&source)?;
    out!("ok")?;
    Ok(ExitCode::SUCCESS)
}

fn list() -> Result<ExitCode> {
    let cwd = std::env::current_dir()?;
    let default = layout::resolve_source(None, &cwd)?;
    let is_default = |name: &str| matches!(&default, LayoutSource::Builtin(b) if b.name == name);
    out!("built-in:")?;
    for b in BUILTIN {
        let mark = if is_default(b.name) { " (default)" } else { "" };
        out!("  {:<13} {}{mark}", b.name, b.description)?;
    }
    let mut local: Vec<_> = std::fs::read_dir(cwd.join("layouts"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    local.sort();
    let orch_yaml = cwd.join("orch.yaml");
    if orch_yaml.is_file() {
        local.insert(0, orch_yaml);
    }
    if !local.is_empty() {
        out!("local:")?;
        for path in &local {
            let verdict = match layout::load(&LayoutSource::File(path.clone())) {
                Ok(l) => format!("session {}, {} agents", l.session, l.agents.len()),
                Err(e) => format!(
                    "invalid: {} problem(s); run `orch layout validate {}`",
                    e.0.len(),
                    rel(path, &cwd)
                ),
            };
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mark = if matches!(&default, LayoutSource::File(d) if d == path) {
                " (default)"
            } else {
                ""
            };
            out!("  {:<13} {}  {verdict}{mark}", name, rel(path, &cwd))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn rel(path: &Path, cwd: &Path) -> String {
    path.strip_prefix(cwd).unwrap_or(path).display().to_string()
}
