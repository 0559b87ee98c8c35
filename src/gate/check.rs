//! Running the layout's check once: `sh -c CHECK` in the gate's scratch worktree, in a
//! process group of its own, stdout and stderr together in one pipe of which the last
//! 64 KiB are kept. At `timeout` the whole group gets SIGTERM, then SIGKILL half a second
//! later; when the check ends on its own, whatever it left running in its group is
//! killed too, so no check ever leaves a process behind.
//!
//! Exit status 0 is green, 125 "cannot test" (as in `git bisect run`), anything else
//! red, a timeout included.

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::bisect::Outcome;

/// How much of a check's output is kept (the end of it).
const KEEP_BYTES: usize = 64 << 10;
/// How many lines of it events and proposals show.
pub const TAIL_LINES: usize = 20;
const TAIL_LINE_CHARS: usize = 400;
/// Between SIGTERM and SIGKILL at a timeout.
const GRACE: Duration = Duration::from_millis(500);

/// What one run said.
#[derive(Clone, Debug)]
pub struct CheckRun {
    pub outcome: Outcome,
    pub exit_status: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration: Duration,
    /// The end of the output, as text.
    pub output: String,
}

impl CheckRun {
    /// The last lines of the output, without escape sequences or control characters.
    pub fn tail(&self) -> Vec<String> {
        tail_lines(&self.output, TAIL_LINES)
    }

    /// Why it is red, for a person: `exit status 1`, `timed out after 10m`, …
    pub fn reason(&self, timeout: Duration) -> String {
        describe(self.timed_out, self.exit_status, self.signal, timeout)
    }
}

/// `exit status 1`, `timed out after 10m`, `killed by signal 9`, `cannot test (exit 125)`.
pub fn describe(
    timed_out: bool,
    exit_status: Option<i32>,
    signal: Option<i32>,
    timeout: Duration,
) -> String {
    if timed_out {
        return format!("timed out after {}", humantime::format_duration(timeout));
    }
    match (exit_status, signal) {
        (Some(0), _) => "passed".into(),
        (Some(125), _) => "cannot test (exit status 125)".into(),
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => "ended without a status".into(),
    }
}

/// The process group of the check that is running, so that whoever owns the gate can
/// kill it (the supervisor does as it stops).
#[derive(Clone, Debug, Default)]
pub struct Running(Arc<Mutex<Option<i32>>>);

impl Running {
    fn set(&self, pgid: Option<i32>) {
        if let Ok(mut g) = self.0.lock() {
            *g = pgid;
        }
    }

    /// Kills the running check's whole process group, if a check runs.
    pub fn kill(&self) {
        let pgid = self.0.lock().ok().and_then(|g| *g);
        if let Some(p) = pgid {
            kill_group(p, rustix::process::Signal::KILL);
        }
    }
}

fn kill_group(pgid: i32, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(pid, sig);
    }
}

/// Runs `command` with `sh -c` in `cwd`, with `env` added, for at most `timeout`.
pub fn run(
    command: &str,
    cwd: &Path,
    env: &[(&str, String)],
    timeout: Duration,
    running: &Running,
) -> Result<CheckRun> {
    use std::os::unix::process::CommandExt;
    let started = Instant::now();
    let (mut reader, writer) = std::io::pipe().context("making a pipe for the check's output")?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        // A repository orch itself was started from must not leak into the check.
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .process_group(0);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting the check `{command}`"))?;
    // The Command holds our copies of the pipe's write end: drop them, or the reader
    // never sees the end of the output.
    drop(cmd);
    let pgid = child.id() as i32;
    running.set(Some(pgid));

    let (out_tx, out_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 2 * KEEP_BYTES {
                kept.drain(..kept.len() - KEEP_BYTES);
            }
        }
        if kept.len() > KEEP_BYTES {
            kept.drain(..kept.len() - KEEP_BYTES);
        }
        let _ = out_tx.send(kept);
    });
    let (done_tx, done_rx) = mpsc::channel::<std::io::Result<ExitStatus>>();
    let mut child = child;
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });

    let mut timed_out = false;
    let status = match done_rx.recv_timeout(timeout) {
        Ok(s) => s,
        Err(_) => {
            timed_out = true;
            kill_group(pgid, rustix::process::Signal::TERM);
            match done_rx.recv_timeout(GRACE) {
                Ok(s) => s,
                Err(_) => {
                    kill_group(pgid, rustix::process::Signal::KILL);
                    done_rx
                        .recv()
                        .unwrap_or_else(|_| Err(std::io::Error::other("the check vanished")))
                }
            }
        }
    };
    // Whatever the check started and left behind in its group goes with it.
    kill_group(pgid, rustix::process::Signal::KILL);
    running.set(None);
    let status = status.context("waiting for the check")?;
    let duration = started.elapsed();
    // Everything that held the pipe is dead now, unless it left the group on purpose:
    // then its output is given up on after a moment.
    let output = out_rx
        .recv_timeout(Duration::from_secs(1))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();

    use std::os::unix::process::ExitStatusExt;
    let exit_status = status.code();
    let signal = status.signal();
    let outcome = match (timed_out, exit_status) {
        (false, Some(0)) => Outcome::Green,
        (false, Some(125)) => Outcome::Untestable,
        _ => Outcome::Red,
    };
    Ok(CheckRun {
        outcome,
        exit_status,
        signal,
        timed_out,
        duration,
        output,
    })
}

/// The last `n` non-empty lines of `text`, cleaned for showing in a terminal or JSON.
pub fn tail_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<String> = text
        .lines()
        .map(clean_line)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].to_vec()
}

/// A line without escape sequences, control characters or a tail past 400 characters.
fn clean_line(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte; other escapes: ESC and one more character.
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
            continue;
        }
        if c == '\t' {
            out.push(' ');
        } else if !c.is_control() {
            out.push(c);
        }
    }
    if out.chars().count() > TAIL_LINE_CHARS {
        out = out.chars().take(TAIL_LINE_CHARS).collect::<String>() + "…";
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn green_red_untestable_and_the_output_tail() {
        let dir = tempfile::tempdir().expect("dir");
        let r = Running::default();
        let t = Duration::from_secs(20);
        let green = run("echo hello; echo err >&2", dir.path(), &[], t, &r).expect("run");
        assert_eq!(green.outcome, Outcome::Green);
        assert_eq!(green.tail(), ["hello", "err"]);
        let red = run("exit 3", dir.path(), &[], t, &r).expect("run");
        assert_eq!((red.outcome, red.exit_status), (Outcome::Red, Some(3)));
        assert_eq!(red.reason(t), "exit status 3");
        let skip = run("exit 125", dir.path(), &[], t, &r).expect("run");
        assert_eq!(skip.outcome, Outcome::Untestable);
        let env = run(
            "echo $ORCH_GATE_COMMIT; pwd",
            dir.path(),
            &[("ORCH_GATE_COMMIT", "abc".into())],
            t,
            &r,
        )
        .expect("run");
        assert_eq!(env.tail()[0], "abc");
    }

    #[test]
    fn a_hanging_check_and_its_children_die_at_the_timeout() {
        let dir = tempfile::tempdir().expect("dir");
        let pidfile = dir.path().join("pid");
        let cmd = format!(
            "sleep 60 & echo $! > {}; trap '' TERM; sleep 60",
            pidfile.display()
        );
        let started = Instant::now();
        let r = run(
            &cmd,
            dir.path(),
            &[],
            Duration::from_millis(300),
            &Running::default(),
        )
        .expect("run");
        assert!(r.timed_out);
        assert_eq!(r.outcome, Outcome::Red);
        assert!(
            r.reason(Duration::from_millis(300))
                .starts_with("timed out")
        );
        assert!(started.elapsed() < Duration::from_secs(10), "never a hang");
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .parse()
            .expect("number");
        let deadline = Instant::now() + Duration::from_secs(5);
        while crate::process::alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !crate::process::alive(pid),
            "the background child was killed too"
        );
    }

    #[test]
    fn a_check_that_passes_leaves_nothing_running() {
        let dir = tempfile::tempdir().expect("dir");
        let pidfile = dir.path().join("pid");
        let cmd = format!("sleep 60 & echo $! > {}; exit 0", pidfile.display());
        let r = run(
            &cmd,
            dir.path(),
            &[],
            Duration::from_secs(20),
            &Running::default(),
        )
        .expect("run");
        assert_eq!(r.outcome, Outcome::Green);
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .parse()
            .expect("number");
        let deadline = Instant::now() + Duration::from_secs(5);
        while crate::process::alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!crate::process::alive(pid));
    }

    #[test]
    fn lines_are_cleaned() {
        let text = "\u{1b}[31merror\u{1b}[0m: bad\tthing\r\n\n\nlast\n";
        assert_eq!(tail_lines(text, 5), ["error: bad thing", "last"]);
        assert_eq!(tail_lines("a\nb\nc\n", 2), ["b", "c"]);
    }
}
