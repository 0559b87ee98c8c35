//! The command line (SPEC §4): clap definitions and one function per command group.
//!
//! Arguments and the layout are parsed first and cheaply; tmux is only run by commands
//! that need it, so `--help`, `layout validate` and `layout list` work without tmux.

mod agent;
mod dashboard;
mod demo;
mod doctor;
mod gate;
mod layout;
mod restore;
mod send;
mod snapshot;
mod status;
mod supervise;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

use crate::layout::{Layout, LayoutErrors, TmuxName};
use crate::state::StateDir;
use crate::tmux::Tmux;

/// `orch --version`: the package version and the git commit it was built from (see
/// build.rs), e.g. `0.1.0 (ac1f54f)`.
pub const VERSION: &str = env!("ORCH_VERSION");

#[derive(Debug, Parser)]
#[command(
    name = "orch",
    version = VERSION,
    about = "A tmux-native orchestrator for teams of AI coding agents"
)]
pub struct Cli {
    /// tmux socket name (`tmux -L NAME`); default: tmux's default server
    #[arg(long, global = true, env = "ORCH_SOCKET", value_name = "NAME")]
    socket: Option<String>,
    /// Where orch keeps its state [default: $XDG_STATE_HOME/orch or ~/.local/state/orch]
    #[arg(long, global = true, env = "ORCH_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Layout file, built-in layout name, or name of ./layouts/NAME.yaml
    /// [default: ./orch.yaml if present, else org9]
    #[arg(long, global = true, env = "ORCH_LAYOUT", value_name = "FILE|NAME")]
    layout: Option<String>,
    /// Overrides the layout's session name
    #[arg(long, global = true, value_name = "NAME")]
    session: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build, stop, check and list layouts
    Layout {
        #[command(subcommand)]
        command: layout::LayoutCommand,
    },
    /// Agents, their states and resources
    Status {
        /// Print JSON (SPEC §4 shape)
        #[arg(long)]
        json: bool,
    },
    /// Check tmux, git, the state dir and the socket
    Doctor,
    /// A simulated organisation of nine agents showing everything orch does, on a tmux
    /// server and in a throwaway workspace of its own (no AI account needed)
    Demo(demo::DemoArgs),
    /// Print a completion script for SHELL: `orch completions bash > ~/.local/share/bash-completion/completions/orch`,
    /// `orch completions zsh > ~/.zfunc/_orch`, `orch completions fish > ~/.config/fish/completions/orch.fish`
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of orch, or of one of its commands: `orch man > orch.1`,
    /// `orch man rollback approve`
    #[command(hide = true)]
    Man {
        /// A command (and subcommand) whose page to print
        command: Vec<String>,
    },
    /// The simulated agent used by the demo and tests
    AgentSim(crate::agent_sim::AgentSimArgs),
    /// The dashboard (also `orch` with no command): brings the session up if it is not,
    /// makes sure its supervisor runs (in the background) and shows the session full
    /// screen. `q` quits the dashboard only: the agents and their supervision go on
    Dashboard,
    /// Run the supervisor headless: events as JSON lines on stdout until SIGINT/SIGTERM
    Supervise {
        /// Detach from the terminal and print nothing (how `orch` and `orch layout up`
        /// start it)
        #[arg(long, hide = true)]
        background: bool,
    },
    /// Restart an agent (a human's restart: no backoff, not counted as a crash)
    Restart { agent: String },
    /// Stop an agent; it stays stopped until `orch start`
    Stop { agent: String },
    /// Start a stopped, exited or fatal agent
    Start { agent: String },
    /// Rebuild a session from a snapshot: panes, history, agents, then a handover message
    /// to each agent once it looks ready (waits at most 30 s without a supervisor)
    Restore {
        /// Snapshot id, or `latest` (the newest one that verifies)
        #[arg(value_name = "ID|latest")]
        id: Option<String>,
        /// Do not queue or send the handover message to the agents
        #[arg(long)]
        no_handover: bool,
    },
    /// Write a snapshot of the session now (the last line printed is its path); or list
    /// and show snapshots
    Snapshot {
        #[command(subcommand)]
        command: Option<snapshot::SnapshotCommand>,
    },
    /// Message an agent: TARGET is a name, role:ROLE or all; the text from the arguments,
    /// --file F, or `-` (stdin). Queued, then pasted and confirmed before Enter
    Send(send::SendArgs),
    /// The audit log of messages
    Audit {
        #[command(subcommand)]
        command: send::AuditCommand,
    },
    /// Run the quality gate now: check the tip of every watched branch (even a tree
    /// checked before), find the culprit of a red one and propose repairs (or, with
    /// --rev, only check REV). Exit status 0 green, 1 red
    Check {
        /// Check this revision only (a branch, tag or commit)
        #[arg(long, value_name = "REV")]
        rev: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Rollback proposals of the quality gate: list, show, approve, reject, undo
    Rollback {
        #[command(subcommand)]
        command: gate::RollbackCommand,
    },
    /// The event journal
    Events {
        /// Keep printing new events as they come
        #[arg(long, short)]
        follow: bool,
        /// Print the JSON lines as stored
        #[arg(long)]
        json: bool,
    },
    /// Hands stdin to the session's transcript writer, which appends it to FILE with
    /// secrets redacted (run by tmux pipe-pane)
    #[command(hide = true)]
    Transcript {
        #[arg(long)]
        redact: Vec<String>,
        file: PathBuf,
    },
    /// Appends the output of every pane handed over to it to the transcripts in DIR
    /// (started by `orch transcript`)
    #[command(hide = true)]
    TranscriptWriter { dir: PathBuf },
    /// Runs tmux (its control-mode client) and kills it as soon as process PARENT dies
    /// (started by the supervisor, see tmux::guard)
    #[command(hide = true)]
    ControlGuard {
        parent: u32,
        #[arg(last = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Called by tmux hooks to reach the supervisor
    #[command(hide = true)]
    Hook {
        #[command(subcommand)]
        hook: Hook,
    },
}

#[derive(Debug, Subcommand)]
enum Hook {
    PaneDied {
        #[arg(long)]
        session: String,
        pane: String,
    },
    /// An agent CLI's own hook: tells the supervisor what the agent is doing. Run with the
    /// pane's ORCH_* environment; prints nothing and always exits 0
    Activity {
        #[arg(long, value_parser = parse_profile)]
        profile: crate::layout::Profile,
        /// The hook input comes as JSON on stdin (Claude Code, Gemini CLI)
        #[arg(long)]
        stdin: bool,
        /// The event, when the CLI passes none (Aider)
        #[arg(long)]
        event: Option<String>,
        /// A JSON payload passed as an argument (Codex's notify)
        payload: Option<String>,
    },
}

fn parse_profile(s: &str) -> Result<crate::layout::Profile, String> {
    crate::layout::Profile::from_name(s).ok_or_else(|| format!("unknown profile {s:?}"))
}

pub use crate::error::BadInput;

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => report(&err),
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let ctx = Context {
        socket: cli.socket,
        state_dir: cli.state_dir,
        layout: cli.layout,
        session: cli.session,
    };
    let Some(command) = cli.command else {
        return dashboard::run(&ctx);
    };
    match command {
        Command::Dashboard => dashboard::run(&ctx),
        Command::Layout { command } => layout::run(&ctx, command),
        Command::Status { json } => status::run(&ctx, json),
        Command::Doctor => doctor::run(&ctx),
        Command::Supervise { background } => supervise::run_supervise(&ctx, background),
        Command::Restart { agent } => agent::run(&ctx, agent::Action::Restart, &agent),
        Command::Stop { agent } => agent::run(&ctx, agent::Action::Stop, &agent),
        Command::Start { agent } => agent::run(&ctx, agent::Action::Start, &agent),
        Command::Restore { id, no_handover } => restore::run(&ctx, id.as_deref(), no_handover),
        Command::Snapshot { command } => snapshot::run(&ctx, command),
        Command::Transcript { redact, file } => {
            if let Err(e) = crate::session::transcript::hand_over(&redact, &file) {
                // tmux throws away a pipe child's stderr: the session log is where it shows.
                let session_dir = file.parent().and_then(Path::parent);
                let _log = session_dir.and_then(crate::logging::init);
                tracing::error!(file = %file.display(), "no transcript: {e:#}");
                return Err(e);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::TranscriptWriter { dir } => {
            let _log = dir.parent().and_then(crate::logging::init);
            crate::session::transcript::writer::run(&dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Send(args) => send::run(&ctx, args),
        Command::Audit { command } => send::run_audit(&ctx, command),
        Command::Events { follow, json } => supervise::run_events(&ctx, follow, json),
        Command::Check { rev, json } => gate::run_check(&ctx, rev, json),
        Command::Rollback { command } => gate::run_rollback(&ctx, command),
        Command::Hook {
            hook: Hook::PaneDied { session, pane },
        } => supervise::run_hook(&ctx, &session, &pane),
        Command::Hook {
            hook:
                Hook::Activity {
                    profile,
                    stdin,
                    event,
                    payload,
                },
        } => {
            supervise::run_activity_hook(
                &ctx,
                profile,
                stdin,
                event.as_deref(),
                payload.as_deref(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::AgentSim(args) => crate::agent_sim::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // Into memory first: clap_complete panics on a closed pipe (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "orch", &mut script);
            std::io::Write::write_all(&mut std::io::stdout().lock(), &script)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { command } => man(&command),
        Command::ControlGuard { parent, args } => {
            let code = crate::tmux::guard::run_guard(parent, &args)?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
    }
}

/// `orch man [COMMAND...]`: the page clap_mangen renders from the clap definitions, so it
/// never disagrees with `--help`.
fn man(path: &[String]) -> Result<ExitCode> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    let mut name = "orch".to_owned();
    for part in path {
        let Some(sub) = cmd.find_subcommand(part).cloned() else {
            return Err(BadInput(format!(
                "orch {}: no such command; `orch --help` lists them",
                path.join(" ")
            ))
            .into());
        };
        name = format!("{name}-{part}");
        cmd = sub.display_name(name.clone());
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .source(format!("orch {VERSION}"))
        .render(&mut page)?;
    std::io::Write::write_all(&mut std::io::stdout().lock(), &page)?;
    Ok(ExitCode::SUCCESS)
}

/// The global options, resolved lazily by the commands that need them.
pub(crate) struct Context {
    socket: Option<String>,
    state_dir: Option<PathBuf>,
    layout: Option<String>,
    session: Option<String>,
}

impl Context {
    fn tmux(&self) -> Tmux {
        Tmux::new(self.socket.clone())
    }

    fn state(&self) -> Result<StateDir> {
        StateDir::resolve(self.state_dir.clone())
    }

    fn layout_source(&self) -> Result<crate::layout::LayoutSource> {
        let cwd = std::env::current_dir()?;
        Ok(crate::layout::resolve_source(self.layout.as_deref(), &cwd)?)
    }

    /// The layout named by `--layout`, with `--session` applied.
    fn layout(&self) -> Result<Layout> {
        let source = self.layout_source()?;
        let mut layout = crate::layout::load(&source)?;
        if let Some(name) = self.session_override()? {
            layout.session = name;
        }
        Ok(layout)
    }

    fn session_override(&self) -> Result<Option<TmuxName>> {
        let Some(name) = &self.session else {
            return Ok(None);
        };
        let name = TmuxName::new(name.clone()).map_err(|e| BadInput(format!("--session: {e}")))?;
        Ok(Some(name))
    }

    /// How to start this session's supervisor in the background.
    fn spawn(&self) -> Result<crate::supervisor::background::Spawn> {
        let layout = match self.layout_source()? {
            crate::layout::LayoutSource::File(path) => std::path::absolute(&path)?.into_os_string(),
            crate::layout::LayoutSource::Builtin(b) => b.name.into(),
        };
        Ok(crate::supervisor::background::Spawn {
            exe: std::env::current_exe().context("finding the orch binary")?,
            socket: self.socket.clone(),
            state_dir: self.state()?.root().to_path_buf(),
            layout,
            session: self.session.clone(),
        })
    }

    /// Starts logging into the session's state folder; keep the guard until exit.
    fn log_to(
        &self,
        layout: &Layout,
    ) -> Result<Option<tracing_appender::non_blocking::WorkerGuard>> {
        let dir = self.state()?.session_dir(layout.session.as_str())?;
        Ok(crate::logging::init(&dir))
    }
}

/// Prints an error the way SPEC §4 asks (one clear sentence on stderr) and picks the exit
/// code: 2 for bad input, 1 for a failed operation. A closed stdout is not an error.
fn report(err: &anyhow::Error) -> ExitCode {
    if let Some(io) = err.downcast_ref::<std::io::Error>()
        && io.kind() == std::io::ErrorKind::BrokenPipe
    {
        return ExitCode::SUCCESS;
    }
    let mut stderr = std::io::stderr().lock();
    if let Some(layout_errors) = err.downcast_ref::<LayoutErrors>() {
        let _ = writeln!(stderr, "{layout_errors}");
        return ExitCode::from(2);
    }
    let _ = writeln!(stderr, "orch: {err:#}");
    if err.downcast_ref::<BadInput>().is_some()
        || err.downcast_ref::<crate::gate::BadInput>().is_some()
    {
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    }
}

/// Writes to stdout without panicking on a closed pipe (`println!` would).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}
pub(crate) use out;
