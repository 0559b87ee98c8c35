//! `orch send TARGET [MESSAGE...]` and `orch audit verify`: arguments in, lines out; the
//! sending itself is [`crate::messaging::send`].
//!
//! Inside a pane no flags are needed: the session comes from `ORCH_SESSION` and the
//! sender from `ORCH_AGENT`; outside, the sender is `user`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use super::{BadInput, Context, out};
use crate::layout::{Layout, TmuxName};
use crate::messaging::acl::Sender;
use crate::messaging::audit;
use crate::messaging::queue::Priority;
use crate::messaging::send::{Outcome, SendRequest, send};
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
    /// `idle`: deliver once the agent is idle or waiting for input; it waits as long as
    /// the agent is known to be working (up to --timeout when given), and 30 s while its
    /// activity cannot be read
    #[arg(long, value_enum, default_value = "now")]
    when: WhenArg,
    /// Wait until every message is delivered (exit 1 on failure or timeout)
    #[arg(long)]
    wait: bool,
    /// How long --wait waits [default: 30s]; with --when idle, also how long the message
    /// waits for the agent before it goes anyway
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
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

    // The sender: the pane's agent (`ORCH_AGENT`), else the user.
    let sender_name = env_nonempty("ORCH_AGENT");
    let sender_role = match &sender_name {
        None => None,
        Some(n) => Some(
            layout
                .agents
                .iter()
                .find(|a| a.name.as_str() == n)
                .map(|a| a.role.as_str().to_owned())
                .or_else(|| env_nonempty("ORCH_ROLE"))
                .ok_or_else(|| {
                    BadInput(format!(
                        "ORCH_AGENT={n} is not an agent of session {session}; unset it to send as the user"
                    ))
                })?,
        ),
    };
    let sender = match (&sender_name, &sender_role) {
        (Some(name), Some(role)) => Sender::Agent { name, role },
        _ => Sender::User,
    };
    let req = SendRequest {
        target: &args.target,
        text: &text,
        priority: match args.priority {
            PriorityArg::High => Priority::High,
            PriorityArg::Normal => Priority::Normal,
            PriorityArg::Low => Priority::Low,
        },
        enter: !args.no_enter,
        when_idle: args.when == WhenArg::Idle,
        wait: args.wait,
        timeout: args.timeout,
    };
    let mut printed = Ok(());
    let report = send(&layout, &tmux, &dir, sender, &req, |t, o| {
        let line = match o {
            Outcome::Delivered { took, by: None } => {
                format!("{t}: delivered ({} ms)", took.as_millis())
            }
            Outcome::Delivered { took, by: Some(by) } => {
                format!("{t}: delivered ({} ms, by {by})", took.as_millis())
            }
            Outcome::Failed(reason) => format!("{t}: failed: {reason}"),
            Outcome::Queued(why) => format!(
                "{t}: queued ({why}); it is delivered when the agent runs and is not in copy mode"
            ),
            Outcome::TimedOut(after) => format!(
                "{t}: not delivered within {}; the message stays queued",
                humantime::format_duration(*after)
            ),
        };
        if printed.is_ok() {
            printed = out!("{line}");
        }
    })?;
    printed?;
    for r in &report.skipped {
        eprintln!("orch: skipped: {r}");
    }
    for (t, c) in &report.corrupt {
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
    Ok(if report.failed() {
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
