//! `orch demo [--headless] [--speed N] [--keep]`: the simulated organisation of
//! [`crate::demo`], shown in the dashboard ([`open_dashboard`]) or, headless, as the
//! event journal's JSON lines on stdout, with the demo approving the rollback itself.
//!
//! Human words (how to attach, what was approved, the verdict) go to stderr, so that
//! headless stdout is JSON lines only, as `orch supervise` prints them.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::{Context, out};
use crate::demo::{Demo, Ending, Options, Progress, Story, waiting_proposal};
use crate::gate::service::{Answer, Call};

#[derive(Debug, clap::Args)]
pub(super) struct DemoArgs {
    /// No dashboard: print the events as JSON lines, approve the rollback, and exit 0 once
    /// every event the story expects has happened (1 if one did not, in time)
    #[arg(long)]
    headless: bool,
    /// Play the story N times faster (every delay divided by N; 0.5 is half as fast)
    #[arg(long, value_name = "N", default_value_t = 1.0)]
    speed: f64,
    /// Keep the agents' session and the workspace when the demo ends (it says where they
    /// are and how to remove them)
    #[arg(long)]
    keep: bool,
}

/// How often the journal is read.
const POLL: Duration = Duration::from_millis(50);

pub(super) fn run(args: DemoArgs) -> Result<ExitCode> {
    let story = Story::builtin()?;
    // Before anything is made: a Ctrl-C from now on ends the demo, and cleans up.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let stop = runtime.block_on(async { Stop::listen() })?;
    eprintln!(
        "orch demo: starting nine simulated agents (president, boss1-2, worker1-6) on a tmux server of their own..."
    );
    let mut demo = Demo::start(
        &story,
        Options {
            speed: args.speed,
            keep: args.keep,
        },
    )?;
    eprintln!(
        "orch demo: watch the agents with: {}",
        demo.attach_command()
    );
    let verdict = if args.headless {
        runtime.block_on(headless(&mut demo, &story, stop))
    } else {
        open_dashboard(&demo, &story, &runtime, stop)
    };
    match demo.end()? {
        Ending::Removed => {}
        Ending::Kept {
            attach,
            workspace,
            remove,
        } => {
            eprintln!(
                "orch demo: kept the agents' session ({attach}) and the workspace {} (repository, layout, state); remove both with: {remove}",
                workspace.display()
            );
        }
    }
    verdict
}

/// SIGINT, SIGTERM and SIGHUP: each ends the demo the same way.
struct Stop {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Stop {
    fn listen() -> Result<Stop> {
        Ok(Stop {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

/// The exit status of an interrupted demo (128 + SIGINT, as shells report it).
const INTERRUPTED: u8 = 130;

async fn headless(demo: &mut Demo, story: &Story, mut stop: Stop) -> Result<ExitCode> {
    let started = Instant::now();
    let deadline = started + story.timeout(demo.speed);
    let mut journal = demo.journal()?;
    let mut progress = Progress::new(story.expect.clone());
    let mut approvals = Approvals::default();
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            biased;
            () = stop.recv() => {
                eprintln!("orch demo: interrupted; cleaning up");
                return Ok(ExitCode::from(INTERRUPTED));
            }
            Some(result) = approvals.done.recv() => report_approval(result),
            _ = tick.tick() => {
                for (line, ev) in journal.read_new()? {
                    out!("{line}")?;
                    progress.observe(&ev);
                    if let Some(id) = waiting_proposal(&ev) {
                        approvals.approve(demo, id);
                    }
                }
                if progress.done() {
                    let (n, _) = progress.count();
                    eprintln!(
                        "orch demo: the story is complete: all {n} expected events happened, in order, in {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                if Instant::now() >= deadline {
                    return Ok(incomplete(&progress, &format!("within {} s", story.timeout(demo.speed).as_secs())));
                }
                if !demo.supervising() {
                    return Ok(incomplete(&progress, "because its supervisor stopped (see demo-supervisor.stderr and the log in its state dir; --keep keeps them)"));
                }
            }
        }
    }
}

fn incomplete(progress: &Progress, why: &str) -> ExitCode {
    let (n, all) = progress.count();
    let missing: Vec<String> = progress.missing().iter().map(|e| e.to_string()).collect();
    eprintln!(
        "orch demo: the story did not complete {why}: {n} of {all} expected events happened; still missing, in order: {}",
        missing.join(", ")
    );
    ExitCode::from(1)
}

/// Approvals run off the loop (the gate may take a moment), one per proposal.
struct Approvals {
    asked: Vec<String>,
    tx: mpsc::UnboundedSender<Result<String>>,
    done: mpsc::UnboundedReceiver<Result<String>>,
}

impl Default for Approvals {
    fn default() -> Self {
        let (tx, done) = mpsc::unbounded_channel();
        Self {
            asked: Vec::new(),
            tx,
            done,
        }
    }
}

impl Approvals {
    /// Approves proposal `id` as `orch rollback approve ID` does (the same domain call,
    /// answered by the demo's supervisor), unless it was approved already. Only the first proposal of a
    /// red range is approved: it is the least destructive, and the others go with it.
    fn approve(&mut self, demo: &Demo, id: &str) {
        if !self.asked.is_empty() {
            return;
        }
        self.asked.push(id.to_owned());
        eprintln!("orch demo: approving rollback {id}, as `orch rollback approve {id}` would");
        let ctx = context_of(demo);
        let id = id.to_owned();
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let _ = tx.send(approve(&ctx, &id));
        });
    }

    /// Forgets what was approved, so a later red range is approved too.
    fn reset(&mut self) {
        self.asked.clear();
    }
}

/// The global options pointing at the demo's session, as a user would pass them.
fn context_of(demo: &Demo) -> Context {
    Context {
        socket: Some(demo.workspace.socket.clone()),
        state_dir: Some(demo.workspace.state.root().to_path_buf()),
        layout: Some(demo.workspace.layout_file.to_string_lossy().into_owned()),
        session: None,
    }
}

/// `orch rollback approve ID`'s call, [`crate::gate::session::call`]; a line saying what
/// was done.
fn approve(ctx: &Context, id: &str) -> Result<String> {
    let layout_file = ctx.layout.as_ref().map(std::path::PathBuf::from);
    let answer = crate::gate::session::call(
        &ctx.layout()?,
        &ctx.tmux(),
        &ctx.state()?,
        layout_file.as_deref(),
        Call::Approve { id: id.to_owned() },
        &mut |_| {},
    )?;
    let Answer::Approved { executed, .. } = answer else {
        anyhow::bail!("unexpected answer from the gate: {answer:?}");
    };
    Ok(format!(
        "rollback {} ({}) executed: {} moved {} -> {}; the old tip is kept in {}",
        executed.id,
        executed.kind.as_str(),
        executed.branch,
        crate::git::repo::short(&executed.from),
        crate::git::repo::short(&executed.to),
        executed.backup_ref
    ))
}

fn report_approval(result: Result<String>) {
    match result {
        Ok(line) => eprintln!("orch demo: {line}"),
        Err(e) => eprintln!("orch demo: the approval failed: {e:#}"),
    }
}

/// `orch demo` without `--headless`: shows the running demo to a person until they quit;
/// when this returns, the demo ends (and cleans up). In a terminal that is the dashboard,
/// on the demo's own socket, state dir and layout, a client of the supervisor the demo
/// runs (`q` quits); without one (stdin or stdout not a terminal), one line per event
/// ([`progress`]).
fn open_dashboard(
    demo: &Demo,
    story: &Story,
    runtime: &tokio::runtime::Runtime,
    stop: Stop,
) -> Result<ExitCode> {
    use std::io::IsTerminal;
    if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        return runtime.block_on(progress(demo, story, stop));
    }
    let ctx = context_of(demo);
    let _log = ctx.log_to(&demo.layout)?;
    crate::tui::run(crate::tui::Options {
        layout: demo.layout.clone(),
        layout_file: Some(demo.workspace.layout_file.clone()),
        tmux: demo.tmux(),
        state: demo.workspace.state.clone(),
        spawn: ctx.spawn()?,
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The demo without a terminal to draw on: the same storyline, one human-readable line
/// per event on stdout; `y` and Enter approves the rollback that waits, `q` and Enter (or
/// Ctrl-C) quits.
async fn progress(demo: &Demo, story: &Story, mut stop: Stop) -> Result<ExitCode> {
    let started = Instant::now();
    let mut journal = demo.journal()?;
    let mut progress = Progress::new(story.expect.clone());
    let mut approvals = Approvals::default();
    let mut waiting: Option<String> = None;
    let mut keys = Some(stdin_lines());
    let mut tick = tokio::time::interval(POLL);
    let mut said_done = false;
    eprintln!(
        "orch demo: the story takes about {} s. Type y and Enter to approve a rollback when one waits; q and Enter (or Ctrl-C) quits and removes everything.",
        story.timeout(demo.speed).as_secs()
    );
    loop {
        tokio::select! {
            biased;
            () = stop.recv() => return Ok(ExitCode::SUCCESS),
            key = recv_key(&mut keys) => match key.as_deref().map(str::trim) {
                // Without input (stdin at its end) the demo runs until Ctrl-C.
                None => keys = None,
                Some("q") => return Ok(ExitCode::SUCCESS),
                Some("y") => match waiting.take() {
                    Some(id) => {
                        approvals.reset();
                        approvals.approve(demo, &id);
                    }
                    None => eprintln!("orch demo: no rollback waits for approval"),
                },
                Some(_) => eprintln!("orch demo: y approves the rollback that waits, q quits"),
            },
            Some(result) = approvals.done.recv() => report_approval(result),
            _ = tick.tick() => {
                for (_, ev) in journal.read_new()? {
                    if let Some(line) = progress_line(&ev, started.elapsed()) {
                        write_styled(&line)?;
                    }
                    progress.observe(&ev);
                    if let Some(id) = waiting_proposal(&ev) && waiting.is_none() {
                        eprintln!("orch demo: rollback {id} waits for you: type y and Enter to approve it");
                        waiting = Some(id.to_owned());
                    }
                }
                if progress.done() && !said_done {
                    said_done = true;
                    eprintln!("orch demo: that was the whole story. The agents stay up until you quit (q and Enter).");
                }
            }
        }
    }
}

/// The next line typed, or `None` once stdin ended (then never again: it waits forever).
async fn recv_key(keys: &mut Option<mpsc::UnboundedReceiver<String>>) -> Option<String> {
    match keys {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Lines typed on stdin (a thread of its own: a blocking read must not hold up the loop
/// nor the runtime's end).
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = std::thread::Builder::new()
        .name("demo-keys".into())
        .spawn(move || {
            use std::io::BufRead;
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    rx
}

/// A line with a colour, for [`write_styled`].
struct Styled {
    style: anstyle::Style,
    text: String,
}

/// Writes a line to stdout in its colour; anstream leaves the colour out when stdout is
/// no terminal or NO_COLOR is set.
fn write_styled(line: &Styled) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = anstream::stdout().lock();
    writeln!(
        stdout,
        "{}{}{}",
        line.style.render(),
        line.text,
        line.style.render_reset()
    )
}

/// One event as a person reads it: time, agent, what happened. Screen readings that
/// change every second (`activity_changed` to working or idle) are left out.
fn progress_line(ev: &serde_json::Value, at: Duration) -> Option<Styled> {
    use anstyle::{AnsiColor, Style};
    let kind = ev["kind"].as_str()?;
    let agent = ev["agent"].as_str().unwrap_or("");
    let s = |k: &str| ev[k].as_str().unwrap_or("").to_owned();
    let (colour, what) = match kind {
        "activity_changed" if ev["to"] == "waiting" => (
            AnsiColor::Yellow,
            "waits for a human (an approval prompt)".to_owned(),
        ),
        "activity_changed" | "check_started" | "agent_backoff" | "message_queued"
        | "write_recovered" => {
            return None;
        }
        "message_delivered" => (
            AnsiColor::Cyan,
            format!("received a message from {}", s("from")),
        ),
        "message_refused" => (AnsiColor::Yellow, format!("refused: {}", s("reason"))),
        "agent_exited" => (
            AnsiColor::Red,
            format!("exited (status {})", ev["exit_status"]),
        ),
        "agent_restarted" => (AnsiColor::Green, "restarted".to_owned()),
        "agent_fatal" => (
            AnsiColor::Red,
            "crash loop: fatal, it stays down until a human acts".to_owned(),
        ),
        "agent_stalled" => (
            AnsiColor::Yellow,
            format!("stalled: silent for {} s", ev["silent_secs"]),
        ),
        "memory_leak" => (AnsiColor::Yellow, "suspected memory leak".to_owned()),
        "snapshot_written" => (
            AnsiColor::Blue,
            format!("snapshot {} written ({})", s("id"), s("reason")),
        ),
        "check_passed" => (AnsiColor::Green, format!("check green on {}", s("branch"))),
        "check_failed" => (AnsiColor::Red, format!("check RED on {}", s("branch"))),
        "rollback_proposed" => (
            AnsiColor::Magenta,
            format!(
                "rollback proposed ({}, risk {}): {}",
                s("repair"),
                s("risk"),
                s("why")
            ),
        ),
        "rollback_executed" => (AnsiColor::Green, format!("rollback {} executed", s("id"))),
        "rollback_rejected" => (
            AnsiColor::White,
            format!("rollback {} not run: {}", s("id"), s("reason")),
        ),
        "escalated" => (AnsiColor::Red, format!("escalated: {}", s("reason"))),
        other => (AnsiColor::White, other.replace('_', " ")),
    };
    Some(Styled {
        style: Style::new().fg_color(Some(colour.into())),
        text: format!("{:>6.1}s  {agent:<10} {what}", at.as_secs_f64()),
    })
}
