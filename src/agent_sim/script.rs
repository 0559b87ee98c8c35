//! `orch agent-sim --script FILE`: a simulated agent that plays a screenplay of timed
//! steps instead of the fault flags, so `orch demo` can stage a whole organisation.
//!
//! The file is YAML:
//! ```yaml
//! profile: claude        # whose screens to draw (default: --profile)
//! work_every: 3s         # a work line this often while nothing else happens (default: none)
//! work: ["reading greet.sh", "running sh check.sh"]   # what those lines say, in turn
//! turn: 3s               # after its last step, a task at the idle prompt takes this long
//! steps:                 # each `at` a time after this start of the agent, in order
//!   - { at: 1s, say: "reading the plan" }
//!   - { at: 2s, send: { to: boss1, text: "done" } }    # runs `orch send` from the pane
//!   - { at: 3s, commit: { message: "greet: --name", files: { greet.sh: "…" } } }
//!   - { at: 4s, commits: [ { message: …, files: … }, { message: …, files: … } ] }
//!   - { at: 5s, orch: [snapshot] }                     # runs any orch command
//!   - { at: 6s, leak: { mib_per_sec: 8, max_mib: 256 } }
//!   - { at: 7s, prompt: true }    # the profile's approval dialog; later steps wait for an answer
//!                                 # (y, n or a choice's number; other text leaves it asking)
//!   - { at: 8s, idle: true }      # the profile's idle prompt; later steps wait for a task
//!   - { at: 9s, hang: true }      # silent from now on, but alive
//!   - { at: 9s, exit: 3 }         # ends with this status
//! restarted: [ … ]       # what it does when started again (default: the steps again)
//! ```
//! A start is counted in `FILE.runs` (a private file beside the script), which is how the
//! agent knows it was restarted. Commits are made with the git CLI in the working
//! directory, as an agent would make them; a `commits:` step builds its commits on the
//! current tip and moves the branch once, so they land together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration as StdDuration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::{CLEAR_SCREEN, Out, screens, spawn_leaker, spawn_stdin_reader, work_line};
use crate::layout::{Duration, Profile};

/// One agent's screenplay.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Whose screens to draw; `--profile` (or ORCH_PROFILE) when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// A work line this often while the agent is working and no step is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_every: Option<Duration>,
    /// What the work lines say, in turn (default: generic coding chores).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub work: Vec<String>,
    /// Once its steps are done, an agent given a task at its idle prompt works this long
    /// and goes back to the prompt (default: 3s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<Duration>,
    #[serde(default)]
    pub steps: Vec<Step>,
    /// The steps of every start after the first; without it, `steps` again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted: Option<Vec<Step>>,
}

/// One step: at a time after the agent started, one action.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Step {
    pub at: Duration,
    #[serde(flatten)]
    pub action: Action,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Print these lines.
    Say(String),
    /// `orch send TO TEXT` from the pane, as an agent would run it.
    Send { to: String, text: String },
    /// Any orch command, e.g. `[snapshot]`.
    Orch(Vec<String>),
    /// One commit of these files on the current branch.
    Commit(Commit),
    /// Several commits, one after the other, landing on the branch together.
    Commits(Vec<Commit>),
    /// Start holding this much more memory every second.
    Leak(Leak),
    /// Show the profile's approval dialog and wait for an answer.
    Prompt(bool),
    /// Show the profile's idle prompt and wait for a task.
    Idle(bool),
    /// Print nothing more, answer nothing, but stay alive.
    Hang(bool),
    /// End with this exit status.
    Exit(u8),
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Commit {
    pub message: String,
    /// Path (relative to the working directory) → whole new content.
    pub files: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Leak {
    pub mib_per_sec: u64,
    #[serde(default = "default_leak_max")]
    pub max_mib: u64,
}

fn default_leak_max() -> u64 {
    256
}

impl Script {
    pub fn parse(text: &str, file: &str) -> Result<Script> {
        let script: Script = serde_yaml::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map_or_else(String::new, |l| format!("{}:{}: ", l.line(), l.column()));
            anyhow::anyhow!("{file}:{at}{e}")
        })?;
        Ok(script)
    }

    pub fn load(path: &Path) -> Result<Script> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the script {}", path.display()))?;
        Script::parse(&text, &path.display().to_string())
    }

    /// The same screenplay `speed` times faster: every `at` and `work_every` divided.
    pub fn faster(&self, speed: f64) -> Script {
        let scale = |steps: &[Step]| {
            steps
                .iter()
                .map(|s| Step {
                    at: divide(s.at, speed),
                    action: s.action.clone(),
                })
                .collect::<Vec<_>>()
        };
        Script {
            profile: self.profile,
            work_every: self.work_every.map(|d| divide(d, speed)),
            work: self.work.clone(),
            turn: self.turn.map(|d| divide(d, speed)),
            steps: scale(&self.steps),
            restarted: self.restarted.as_deref().map(scale),
        }
    }
}

/// `d / speed`, in whole milliseconds (at least 1 ms when `d` is not zero).
pub fn divide(d: Duration, speed: f64) -> Duration {
    if d.0.is_zero() || !(speed.is_finite() && speed > 0.0) {
        return d;
    }
    let ms = (d.0.as_secs_f64() * 1000.0 / speed).round().max(1.0);
    Duration(StdDuration::from_millis(ms as u64))
}

/// Where the starts of the agent playing `script` are counted.
fn runs_file(script: &Path) -> PathBuf {
    let mut name = script.as_os_str().to_owned();
    name.push(".runs");
    PathBuf::from(name)
}

/// Counts this start; returns its number (1 for the first).
fn count_start(script: &Path) -> Result<u64> {
    let path = runs_file(script);
    let before: u64 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let now = before + 1;
    crate::state::atomic_write(&path, format!("{now}\n").as_bytes())?;
    Ok(now)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Working,
    Prompting,
    Idle,
    Hung,
}

/// Plays the script at `path` until it exits (or forever, if it never does).
pub fn run(path: &Path, default_profile: Profile) -> Result<ExitCode> {
    let script = Script::load(path)?;
    let start_no = count_start(path)?;
    let agent = std::env::var("ORCH_AGENT").unwrap_or_else(|_| "agent".to_owned());
    let profile = script.profile.unwrap_or(default_profile);
    let steps: &[Step] = match (&script.restarted, start_no) {
        (Some(again), n) if n > 1 => again,
        _ => &script.steps,
    };
    let lines = spawn_stdin_reader().context("starting the stdin reader")?;
    let start = Instant::now();
    let floor = StdDuration::from_millis(10);
    let work_every = script.work_every.map(|d| d.0.max(floor));
    let mut out = Out;
    let mut mode = Mode::Working;
    let mut next = 0usize;
    let mut beat: u64 = 0;
    let mut next_beat = work_every;
    let mut stdin_open = true;
    let turn = script.turn.map_or(StdDuration::from_secs(3), |d| d.0);
    // A task taken at the idle prompt after the last step: back to the prompt then.
    let mut turn_ends: Option<StdDuration> = None;

    if start_no > 1 {
        out.say(&format!("[{agent}] started again (start {start_no})"));
    } else {
        out.say(&format!("[{agent}] agent-sim started"));
    }
    loop {
        let now = start.elapsed();
        // Due steps, in order; a prompt or the idle prompt holds the rest back.
        while mode == Mode::Working
            && let Some(step) = steps.get(next)
            && now >= step.at.0
        {
            next += 1;
            match &step.action {
                Action::Exit(code) => return Ok(ExitCode::from(*code)),
                Action::Hang(true) => mode = Mode::Hung,
                Action::Prompt(true) => {
                    mode = Mode::Prompting;
                    out.say(screens::approval(profile));
                }
                Action::Idle(true) => {
                    mode = Mode::Idle;
                    if screens::redraws(profile) {
                        out.say(CLEAR_SCREEN);
                    }
                    out.say(screens::idle(profile));
                }
                other => act(&mut out, &agent, other),
            }
            next_beat = work_every.map(|e| start.elapsed() + e);
        }
        if mode == Mode::Working && turn_ends.is_some_and(|t| now >= t) {
            turn_ends = None;
            mode = Mode::Idle;
            if screens::redraws(profile) {
                out.say(CLEAR_SCREEN);
            }
            out.say(screens::idle(profile));
        }
        if mode == Mode::Working
            && let (Some(every), Some(at)) = (work_every, next_beat)
            && now >= at
        {
            beat += 1;
            out.say(&work_line_of(&script.work, &agent, beat));
            if let Some(status) = screens::working_status(profile, beat, now.as_secs()) {
                out.say(&status);
            }
            next_beat = Some(now + every);
        }

        let mut deadlines = Vec::new();
        if mode == Mode::Working {
            deadlines.extend(steps.get(next).map(|s| s.at.0));
            deadlines.extend(next_beat);
            deadlines.extend(turn_ends);
        }
        let now = start.elapsed();
        let Some(line) = super::next_line(&lines, &mut stdin_open, deadlines, now) else {
            continue;
        };
        if mode == Mode::Hung {
            continue;
        }
        if mode == Mode::Prompting && !is_answer(&line) {
            // A dialog takes only its answers: it still asks.
            out.say(&format!("received: {line}"));
            out.say(screens::approval(profile));
            continue;
        }
        if mode == Mode::Prompting && screens::redraws(profile) {
            out.say(CLEAR_SCREEN);
        }
        out.say(&format!("received: {line}"));
        // A task starts a turn: a CLI shows it is busy at once.
        if let Some(status) = screens::working_status(profile, beat, now.as_secs()) {
            out.say(&status);
        }
        if mode == Mode::Idle && next >= steps.len() {
            turn_ends = Some(start.elapsed() + turn);
        }
        mode = Mode::Working;
        next_beat = work_every.map(|e| start.elapsed() + e);
    }
}

/// Carries out a step that does not change the agent's mode.
fn act(out: &mut Out, agent: &str, action: &Action) {
    match action {
        Action::Say(text) => {
            for line in text.lines() {
                out.say(line);
            }
        }
        Action::Send { to, text } => {
            out.say(&format!("$ orch send {to} {}", quote(text)));
            orch(out, &["send", to, text]);
        }
        Action::Orch(args) => {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            out.say(&format!("$ orch {}", args.join(" ")));
            orch(out, &args);
        }
        Action::Commit(c) => commit_all(out, std::slice::from_ref(c)),
        Action::Commits(cs) => commit_all(out, cs),
        Action::Leak(leak) => {
            if let Err(e) = spawn_leaker(leak.mib_per_sec, leak.max_mib) {
                out.say(&format!("[{agent}] could not start leaking: {e}"));
            }
        }
        // `false` asks for nothing; the mode-changing ones are handled by the caller.
        Action::Prompt(_) | Action::Idle(_) | Action::Hang(_) | Action::Exit(_) => {}
    }
}

/// Whether `line` answers an approval dialog: yes, no, or one of its choices.
fn is_answer(line: &str) -> bool {
    let l = line.trim().to_ascii_lowercase();
    matches!(l.as_str(), "y" | "n" | "yes" | "no" | "1" | "2" | "3" | "d")
}

/// The `n`th work line: the script's own words in turn, else generic chores.
fn work_line_of(work: &[String], agent: &str, n: u64) -> String {
    if work.is_empty() {
        return work_line(agent, n);
    }
    let what = &work[(n as usize).saturating_sub(1) % work.len()];
    format!("[{agent}] {what}")
}

fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\\\""))
}

/// Runs this orch binary with `args` and prints what it printed, indented.
fn orch(out: &mut Out, args: &[&str]) {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            out.say(&format!("  orch: cannot find the orch binary: {e}"));
            return;
        }
    };
    let output = Command::new(exe).args(args).stdin(Stdio::null()).output();
    match output {
        Ok(o) => {
            for line in String::from_utf8_lossy(&o.stdout)
                .lines()
                .chain(String::from_utf8_lossy(&o.stderr).lines())
            {
                out.say(&format!("  {line}"));
            }
        }
        Err(e) => out.say(&format!("  orch: {e}")),
    }
}

/// Makes `commits` on the checked-out branch and moves it once; prints what git would.
fn commit_all(out: &mut Out, commits: &[Commit]) {
    // Another agent's git may hold the index for a moment: try again a few times.
    let mut last = None;
    for attempt in 0..5 {
        match try_commits(commits) {
            Ok(made) => {
                for (id, c) in made.iter().zip(commits) {
                    let short = &id[..id.len().min(7)];
                    out.say(&format!("$ git commit -m {}", quote(&c.message)));
                    out.say(&format!("[{short}] {}", c.message));
                }
                return;
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(StdDuration::from_millis(200 * (attempt + 1)));
    }
    if let Some(e) = last {
        out.say(&format!("git: the commit failed: {e:#}"));
    }
}

/// The commits, built on HEAD with plumbing and landed by one compare-and-swap of the
/// branch; returns their ids.
fn try_commits(commits: &[Commit]) -> Result<Vec<String>> {
    let old = git(&["rev-parse", "HEAD"], None)?;
    let cwd = std::env::current_dir().context("finding the working directory")?;
    let mut parent = old.clone();
    let mut made = Vec::new();
    for c in commits {
        for (path, text) in &c.files {
            let path = cwd.join(path);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                crate::state::create_private_dir(dir)?;
            }
            crate::state::atomic_write(&path, text.as_bytes())?;
        }
        let mut add = vec!["add", "--"];
        add.extend(c.files.keys().map(String::as_str));
        git(&add, None)?;
        let tree = git(&["write-tree"], None)?;
        let id = git(
            &["commit-tree", &tree, "-p", &parent, "-F", "-"],
            Some(&c.message),
        )?;
        made.push(id.clone());
        parent = id;
    }
    let subject = commits.last().map_or("", |c| c.message.as_str());
    git(
        &[
            "update-ref",
            "-m",
            &format!("commit: {subject}"),
            "HEAD",
            &parent,
            &old,
        ],
        None,
    )?;
    Ok(made)
}

/// Runs git in the working directory; its trimmed stdout, or its stderr as the error.
fn git(args: &[&str], stdin: Option<&str>) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new("git")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running git")?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .context("writing to git commit-tree")?;
    }
    let o = child.wait_with_output().context("running git")?;
    if !o.status.success() {
        bail!(
            "git {}: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_from_readable_yaml() {
        let s = Script::parse(
            "profile: claude\nwork_every: 2s\nsteps:\n  - { at: 1s, say: hi }\n  - { at: 2s, send: { to: boss1, text: done } }\n  - { at: 3s, orch: [snapshot] }\n  - { at: 4s, commit: { message: m, files: { a.txt: x } } }\n  - { at: 5s, leak: { mib_per_sec: 4 } }\n  - { at: 6s, prompt: true }\n  - { at: 7s, exit: 3 }\nrestarted:\n  - { at: 100ms, hang: true }\n",
            "t.yaml",
        )
        .expect("parses");
        assert_eq!(s.profile, Some(Profile::Claude));
        assert_eq!(s.steps.len(), 7);
        assert_eq!(
            s.steps[1].action,
            Action::Send {
                to: "boss1".into(),
                text: "done".into()
            }
        );
        assert_eq!(
            s.steps[4].action,
            Action::Leak(Leak {
                mib_per_sec: 4,
                max_mib: 256
            })
        );
        assert_eq!(s.steps[6].action, Action::Exit(3));
        assert_eq!(s.restarted.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn a_bad_step_names_the_file_and_line() {
        let e = Script::parse("steps:\n  - { at: 1s, dance: true }\n", "t.yaml")
            .expect_err("unknown action");
        assert!(e.to_string().starts_with("t.yaml:"), "{e}");
        let e = Script::parse("stepz: []\n", "t.yaml").expect_err("unknown key");
        assert!(e.to_string().contains("stepz"), "{e}");
    }

    #[test]
    fn faster_divides_every_time_and_round_trips() {
        let s = Script::parse(
            "work_every: 3s\nsteps:\n  - { at: 10s, say: a }\nrestarted:\n  - { at: 1s, exit: 1 }\n",
            "t.yaml",
        )
        .expect("parses");
        let f = s.faster(4.0);
        assert_eq!(f.work_every, Some(Duration::from_millis(750)));
        assert_eq!(f.steps[0].at, Duration::from_millis(2500));
        assert_eq!(
            f.restarted.as_ref().map(|r| r[0].at),
            Some(Duration::from_millis(250))
        );
        let text = serde_yaml::to_string(&f).expect("serializes");
        assert_eq!(Script::parse(&text, "again").expect("parses again"), f);
        assert_eq!(
            divide(Duration::from_secs(1), 3.0),
            Duration::from_millis(333)
        );
        assert_eq!(
            divide(Duration::from_millis(1), 1000.0),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn starts_are_counted_beside_the_script() {
        let d = tempfile::tempdir().expect("tmp");
        let script = d.path().join("w.yaml");
        assert_eq!(count_start(&script).expect("first"), 1);
        assert_eq!(count_start(&script).expect("second"), 2);
        assert!(runs_file(&script).is_file());
    }
}
