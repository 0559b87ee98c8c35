//! `orch agent-sim`: a stand-in for an AI coding agent, for the demo and the tests.
//!
//! It prints work lines, echoes what it is sent, and misbehaves on request (exits, hangs,
//! leaks memory, prints errors, asks for approval, goes idle) so every supervision feature
//! can be shown and tested without an AI account. With `--profile` it draws the same
//! working / waiting / idle markers as that agent CLI, taken from
//! [`crate::monitor::activity`], so activity detection sees a simulated Claude Code the
//! way it sees the real one.
//!
//! With `--script FILE` it plays a screenplay of timed steps instead ([`script`]): what
//! `orch demo` stages its organisation with.
//!
//! Plain threads: one reads stdin, one leaks memory, the main thread keeps time.

pub mod script;

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration as StdDuration, Instant};

use anyhow::{Context, Result};

use crate::layout::{Duration, Profile};

#[derive(Debug, clap::Args)]
pub struct AgentSimArgs {
    /// Play this screenplay of timed steps (YAML, see `orch demo`) instead of the flags
    /// below
    #[arg(long, value_name = "FILE")]
    pub script: Option<std::path::PathBuf>,
    /// Print a work line this often
    #[arg(long, value_name = "DUR", default_value = "1s")]
    pub work_every: Duration,
    /// Exit after this long (with --exit-code)
    #[arg(long, value_name = "DUR")]
    pub exit_after: Option<Duration>,
    /// Exit status used by --exit-after
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub exit_code: u8,
    /// Stop printing anything after this long, but keep running
    #[arg(long, value_name = "DUR")]
    pub hang_after: Option<Duration>,
    /// Allocate and touch this many MiB per second
    #[arg(long, value_name = "MIB", default_value_t = 0)]
    pub leak_mb_per_sec: u64,
    /// Stop leaking once this many MiB are held
    #[arg(long, value_name = "MIB", default_value_t = 512)]
    pub leak_max_mb: u64,
    /// Print an error (a traceback or a panic line) this often
    #[arg(long, value_name = "DUR")]
    pub error_every: Option<Duration>,
    /// After this long, show the profile's approval prompt and wait for a line on stdin
    #[arg(long, value_name = "DUR")]
    pub prompt_after: Option<Duration>,
    /// After this long, show the profile's idle prompt and wait for a line on stdin (a task)
    #[arg(long, value_name = "DUR")]
    pub idle_after: Option<Duration>,
    /// Which agent CLI's screens to draw: claude, codex, aider, gemini, shell
    #[arg(
        long,
        value_name = "CLI",
        env = "ORCH_PROFILE",
        default_value = "shell",
        value_parser = parse_profile
    )]
    pub profile: Profile,
}

fn parse_profile(s: &str) -> Result<Profile, String> {
    match s {
        "claude" => Ok(Profile::Claude),
        "codex" => Ok(Profile::Codex),
        "aider" => Ok(Profile::Aider),
        "gemini" => Ok(Profile::Gemini),
        "shell" => Ok(Profile::Shell),
        _ => Err(format!(
            "unknown profile {s:?}: expected claude, codex, aider, gemini or shell"
        )),
    }
}

/// What the simulated agent is doing; only `Working` prints work lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Working,
    /// Showing an approval prompt until a line arrives.
    Prompting,
    /// At its prompt until a line (a task) arrives.
    Idle,
}

/// Runs the simulated agent until `--exit-after` (or a signal) ends it.
pub fn run(args: AgentSimArgs) -> Result<ExitCode> {
    if let Some(path) = &args.script {
        return script::run(path, args.profile);
    }
    let agent = std::env::var("ORCH_AGENT").unwrap_or_else(|_| "agent".to_owned());
    let lines = spawn_stdin_reader().context("starting the stdin reader")?;
    if args.leak_mb_per_sec > 0 {
        spawn_leaker(args.leak_mb_per_sec, args.leak_max_mb).context("starting the leak")?;
    }

    let start = Instant::now();
    let profile = args.profile;
    // A zero period would spin; nobody needs faster than this.
    let floor = StdDuration::from_millis(10);
    let work_every = args.work_every.0.max(floor);
    let error_every = args.error_every.map(|d| d.0.max(floor));
    let mut out = Out;
    let mut mode = Mode::Working;
    let mut hung = false;
    let mut step: u64 = 0;
    let mut errors: u64 = 0;
    let mut next_work = StdDuration::ZERO;
    let mut next_error = error_every;
    let mut prompt_at = args.prompt_after.map(|d| d.0);
    let mut idle_at = args.idle_after.map(|d| d.0);
    let mut stdin_open = true;

    out.say(&format!(
        "[{agent}] agent-sim started (profile {})",
        profile_name(profile)
    ));
    loop {
        let now = start.elapsed();
        if let Some(exit) = args.exit_after
            && now >= exit.0
        {
            if !hung {
                out.say(&format!("[{agent}] exiting with code {}", args.exit_code));
            }
            return Ok(ExitCode::from(args.exit_code));
        }
        if let Some(hang) = args.hang_after
            && now >= hang.0
        {
            hung = true;
        }

        if !hung && mode == Mode::Working {
            if prompt_at.is_some_and(|t| now >= t) {
                prompt_at = None;
                mode = Mode::Prompting;
                out.say(screens::approval(profile));
            } else if idle_at.is_some_and(|t| now >= t) {
                idle_at = None;
                mode = Mode::Idle;
                if screens::redraws(profile) {
                    out.say(CLEAR_SCREEN);
                }
                out.say(screens::idle(profile));
            }
        }
        if !hung && mode == Mode::Working {
            if now >= next_work {
                step += 1;
                out.say(&work_line(&agent, step));
                if let Some(status) = screens::working_status(profile, step, now.as_secs()) {
                    out.say(&status);
                }
                next_work = now + work_every;
            }
            if let Some(every) = error_every
                && next_error.is_some_and(|t| now >= t)
            {
                errors += 1;
                out.say(error_line(errors));
                next_error = Some(now + every);
            }
        }

        let mut deadlines: Vec<StdDuration> = Vec::new();
        deadlines.extend(args.exit_after.map(|d| d.0));
        if !hung {
            deadlines.extend(args.hang_after.map(|d| d.0));
            if mode == Mode::Working {
                deadlines.push(next_work);
                deadlines.extend(next_error);
                deadlines.extend(prompt_at);
                deadlines.extend(idle_at);
            }
        }
        let Some(line) = next_line(&lines, &mut stdin_open, deadlines, now) else {
            continue;
        };
        if hung {
            continue;
        }
        if mode == Mode::Prompting && screens::redraws(profile) {
            // A TUI takes its dialog down once answered; without this the answered dialog
            // would stay in the screen tail and still read as waiting. Cleared before the
            // echo, so the echo stays visible.
            out.say(CLEAR_SCREEN);
        }
        out.say(&format!("received: {line}"));
        if mode != Mode::Working {
            mode = Mode::Working;
            next_work = start.elapsed();
        }
    }
}

/// The next line on stdin, waited for until the earliest of `deadlines` (an hour without
/// any; `now` on the same clock); `None` when a deadline came first. EOF must not end the
/// agent (in a pane the tty stays open anyway, and tests run it with stdin closed): once
/// stdin is closed, `stdin_open` turns false and this only sleeps.
fn next_line(
    lines: &Receiver<String>,
    stdin_open: &mut bool,
    deadlines: Vec<StdDuration>,
    now: StdDuration,
) -> Option<String> {
    let wait = deadlines
        .into_iter()
        .min()
        .map_or(StdDuration::from_secs(3600), |d| d.saturating_sub(now));
    if !*stdin_open {
        std::thread::sleep(wait);
        return None;
    }
    match lines.recv_timeout(wait) {
        Ok(line) => Some(line),
        Err(RecvTimeoutError::Timeout) => None,
        Err(RecvTimeoutError::Disconnected) => {
            *stdin_open = false;
            None
        }
    }
}

const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// stdout, written line by line and flushed at once so a pane (or a test reading a pipe)
/// sees each line when it is printed.
struct Out;

impl Out {
    fn say(&mut self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        // A line ending in a prompt (`$ `, `[y/N] `) is left open, as a real prompt is.
        let newline = if text.ends_with(' ') || text == CLEAR_SCREEN {
            ""
        } else {
            "\n"
        };
        // A closed stdout is no reason for the simulated agent to stop: a real agent whose
        // pane went away keeps running until it is signalled, and supervision tests rely on
        // the process staying up.
        let _ = write!(stdout, "{text}{newline}");
        let _ = stdout.flush();
    }
}

const TASKS: &[&str] = &[
    "editing src/lib.rs",
    "running cargo test",
    "reading src/main.rs",
    "writing tests/it.rs",
    "refactoring src/parser.rs",
    "reviewing the diff",
];

fn work_line(agent: &str, step: u64) -> String {
    let task = TASKS[(step as usize) % TASKS.len()];
    format!("[{agent}] step {step}: {task}")
}

fn error_line(n: u64) -> &'static str {
    if n % 2 == 1 {
        "Traceback (most recent call last): simulated error"
    } else {
        "panic: simulated"
    }
}

fn profile_name(p: Profile) -> &'static str {
    match p {
        Profile::Claude => "claude",
        Profile::Codex => "codex",
        Profile::Aider => "aider",
        Profile::Gemini => "gemini",
        Profile::Shell => "shell",
    }
}

fn spawn_stdin_reader() -> std::io::Result<Receiver<String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("stdin".to_owned())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

/// Grows the resident set by `rate_mib` MiB per second, in tenths, up to `max_mib`.
fn spawn_leaker(rate_mib: u64, max_mib: u64) -> std::io::Result<()> {
    const MIB: u64 = 1024 * 1024;
    let chunk = usize::try_from(rate_mib.saturating_mul(MIB) / 10).unwrap_or(usize::MAX);
    let max = max_mib.saturating_mul(MIB);
    std::thread::Builder::new()
        .name("leak".to_owned())
        .spawn(move || {
            let mut held: u64 = 0;
            while held + chunk as u64 <= max {
                // Filling with a non-zero byte writes every page, so the memory is
                // resident; `vec![0; n]` would map zero pages that RSS never counts.
                // Leaked on purpose: it must outlive this thread.
                let _: &'static mut [u8] = vec![0xA5_u8; chunk].leak();
                held += chunk as u64;
                std::thread::sleep(StdDuration::from_millis(100));
            }
        })?;
    Ok(())
}

/// The screens each agent CLI shows, drawn with the markers that
/// [`crate::monitor::activity`] looks for.
mod screens {
    use crate::layout::Profile;

    const CLAUDE_GLYPHS: &[char] = &['·', '✢', '✳', '✶', '✻', '✽'];
    const VERBS: &[&str] = &["Pondering", "Editing", "Testing", "Reading", "Refactoring"];

    /// The status line a busy CLI shows under its output; a shell shows none.
    pub fn working_status(p: Profile, step: u64, secs: u64) -> Option<String> {
        let verb = VERBS[(step as usize) % VERBS.len()];
        match p {
            Profile::Claude => {
                let glyph = CLAUDE_GLYPHS[(step as usize) % CLAUDE_GLYPHS.len()];
                Some(format!(
                    "{glyph} {verb}… ({secs}s · ↑ {step}.2k tokens · esc to interrupt)"
                ))
            }
            Profile::Codex => Some(format!("• Working ({secs}s • esc to interrupt)")),
            Profile::Aider => Some("░█ Waiting for sim/simulated-model".to_owned()),
            Profile::Gemini => Some(format!("⠏ {verb} (esc to cancel, {secs}s)")),
            Profile::Shell => None,
        }
    }

    /// An approval request, as each CLI draws it.
    pub fn approval(p: Profile) -> &'static str {
        match p {
            Profile::Claude => {
                "\
╭────────────────────────────────────────────────────────────╮
│ Bash command
│
│   cargo test --workspace
│   Run the test suite
│
│ Do you want to proceed?
│ ❯ 1. Yes
│   2. Yes, and don't ask again for cargo test commands
│   3. No, and tell Claude what to do differently (esc)
╰────────────────────────────────────────────────────────────╯"
            }
            Profile::Codex => {
                "\
  Would you like to run the following command?

  Reason: the tests need network access

  $ cargo test --workspace

› 1. Yes, proceed (y)
  2. Yes, and don't ask again for commands that start with `cargo test` (p)
  3. No, and tell Codex what to do differently (esc)

  Press enter to confirm or esc to cancel"
            }
            Profile::Aider => "Run shell command? (Y)es/(N)o/(D)on't ask again [Yes]: ",
            Profile::Gemini => {
                "\
╭────────────────────────────────────────────────────────────╮
│ ?  Shell cargo test --workspace
│
│ Allow execution of: 'cargo'?
│
│ ● 1. Yes, allow once
│   2. Yes, allow always ...
│   3. No, suggest changes (esc)
╰────────────────────────────────────────────────────────────╯
⠏ Waiting for user confirmation..."
            }
            Profile::Shell => "Overwrite src/lib.rs? [y/N] ",
        }
    }

    /// The CLI at rest, waiting for its next task.
    pub fn idle(p: Profile) -> &'static str {
        match p {
            Profile::Claude => {
                "\
✻ Worked for 42s

╭────────────────────────────────────────────────────────────╮
│ >                                                          │
╰────────────────────────────────────────────────────────────╯
  ? for shortcuts"
            }
            Profile::Codex => {
                "\
› Ask Codex to do anything

  ⏎ send   ⌃J newline   ⌃T transcript   ⌃C quit   100% context left"
            }
            Profile::Aider => "> ",
            Profile::Gemini => {
                "\
╭────────────────────────────────────────────────────────────╮
│ >   Type your message or @path/to/file                     │
╰────────────────────────────────────────────────────────────╯"
            }
            Profile::Shell => "$ ",
        }
    }

    /// Whether the CLI is a full-screen TUI that redraws (and so takes a dialog down once
    /// answered), rather than a line-based program whose prompts scroll away.
    pub fn redraws(p: Profile) -> bool {
        matches!(p, Profile::Claude | Profile::Codex | Profile::Gemini)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::activity::{Activity, ActivityProfile};

    const ALL: [Profile; 5] = [
        Profile::Claude,
        Profile::Codex,
        Profile::Aider,
        Profile::Gemini,
        Profile::Shell,
    ];

    fn working_screen(p: Profile) -> String {
        let mut s = String::new();
        for step in 1..=20 {
            s.push_str(&work_line("worker1", step));
            s.push('\n');
            if let Some(status) = screens::working_status(p, step, step) {
                s.push_str(&status);
                s.push('\n');
            }
        }
        s
    }

    /// The simulated screens carry exactly the markers the classifier looks for.
    #[test]
    fn simulated_screens_classify_as_intended() {
        for p in ALL {
            let profile = ActivityProfile::for_profile(p);
            let working = working_screen(p);
            let expected_working = if p == Profile::Shell {
                // A shell running a command shows nothing recognisable.
                Activity::Unknown
            } else {
                Activity::Working
            };
            assert_eq!(
                profile.classify(&working),
                expected_working,
                "{p:?} working"
            );
            let waiting = format!("{working}{}", screens::approval(p));
            assert_eq!(
                profile.classify(&waiting),
                Activity::Waiting,
                "{p:?} waiting"
            );
            let idle = if screens::redraws(p) {
                screens::idle(p).to_owned()
            } else {
                format!("{working}{}", screens::idle(p))
            };
            assert_eq!(profile.classify(&idle), Activity::Idle, "{p:?} idle");
            // After a task arrives at an idle TUI its status line reads as working again.
            let resumed = format!("{idle}\nreceived: go\n{working}");
            assert_eq!(
                profile.classify(&resumed),
                expected_working,
                "{p:?} resumed"
            );
        }
    }

    #[test]
    fn answered_line_prompt_is_no_longer_waiting() {
        for p in [Profile::Aider, Profile::Shell] {
            let screen = format!(
                "{}y\nreceived: y\n{}",
                screens::approval(p),
                work_line("w", 1)
            );
            assert_ne!(
                ActivityProfile::for_profile(p).classify(&screen),
                Activity::Waiting,
                "{p:?}"
            );
        }
    }

    #[test]
    fn profiles_parse_by_name() {
        for p in ALL {
            assert_eq!(parse_profile(profile_name(p)), Ok(p));
        }
        assert!(parse_profile("vim").is_err());
    }
}
