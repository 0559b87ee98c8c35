//! `orch demo` end to end: the real binary, its own tmux server, the whole story.
//!
//! Each demo runs with `TMUX_TMPDIR` and `TMPDIR` pointed at empty folders of the test, so
//! the test can tell that it never made (or talked to) a default tmux server and that it
//! leaves no socket, workspace or process of its own behind. The user's variables that
//! would point orch elsewhere are set to decoys, which the demo must ignore.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use support::{poll, wait_for};

/// Folders a demo runs in, and the decoys it must not touch.
struct Sandbox {
    tmux_tmpdir: tempfile::TempDir,
    tmpdir: tempfile::TempDir,
    home: tempfile::TempDir,
    decoy_state: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Self {
            tmux_tmpdir: tempfile::tempdir().expect("tmp"),
            tmpdir: tempfile::tempdir().expect("tmp"),
            home: tempfile::tempdir().expect("tmp"),
            decoy_state: tempfile::tempdir().expect("tmp"),
        }
    }

    fn socket_dir(&self) -> PathBuf {
        let uid = rustix::process::getuid().as_raw();
        self.tmux_tmpdir.path().join(format!("tmux-{uid}"))
    }

    /// `orch demo ARGS` with stdout and stderr piped.
    fn demo(&self, args: &[&str]) -> Demo {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orch"));
        cmd.arg("demo")
            .args(args)
            .current_dir(self.home.path())
            .env("TMUX_TMPDIR", self.tmux_tmpdir.path())
            .env("TMPDIR", self.tmpdir.path())
            .env("HOME", self.home.path())
            .env_remove("XDG_STATE_HOME")
            // Decoys: as if run from inside someone's tmux and orch session.
            .env("ORCH_SOCKET", "decoy-socket")
            .env("ORCH_STATE_DIR", self.decoy_state.path())
            .env("ORCH_LAYOUT", "org5")
            .env("ORCH_SESSION", "decoy")
            .env("TMUX", "/nonexistent/decoy,1,0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("start orch demo");
        let stdout = lines(child.stdout.take().expect("stdout"));
        let stderr = lines(child.stderr.take().expect("stderr"));
        Demo {
            child,
            started,
            stdout,
            stderr,
            err_seen: Vec::new(),
        }
    }
}

fn lines(pipe: impl std::io::Read + Send + 'static) -> Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

struct Demo {
    child: Child,
    started: Instant,
    stdout: Receiver<(Instant, String)>,
    stderr: Receiver<(Instant, String)>,
    err_seen: Vec<String>,
}

impl Demo {
    /// The socket of the attach line (`tmux -L NAME attach -t demo`).
    fn socket(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok((_, line)) = self.stderr.recv_timeout(left) else {
                panic!(
                    "no attach line within {timeout:?}; stderr: {:#?}",
                    self.err_seen
                );
            };
            self.err_seen.push(line.clone());
            if let Some(rest) = line.split("tmux -L ").nth(1) {
                let name = rest.split_whitespace().next().expect("a socket name");
                assert!(
                    line.ends_with("attach -t demo"),
                    "one line tells how to attach: {line}"
                );
                return name.to_owned();
            }
        }
    }

    /// Waits for the exit (at most `timeout`); returns its status and what it printed.
    fn finish(
        mut self,
        timeout: Duration,
    ) -> (
        std::process::ExitStatus,
        Vec<(Instant, String)>,
        Vec<String>,
    ) {
        let status = wait_for("orch demo to exit", timeout, || {
            self.child.try_wait().ok().flatten()
        });
        // The pipes close with the process; give the readers a moment.
        let out: Vec<_> =
            std::iter::from_fn(|| self.stdout.recv_timeout(Duration::from_secs(2)).ok()).collect();
        let mut err = std::mem::take(&mut self.err_seen);
        err.extend(
            std::iter::from_fn(|| self.stderr.recv_timeout(Duration::from_secs(2)).ok())
                .map(|(_, l)| l),
        );
        (status, out, err)
    }

    fn interrupt(&self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tmux_has_session(sandbox: &Sandbox, socket: &str) -> bool {
    Command::new("tmux")
        .args(["-L", socket, "has-session", "-t", "=demo"])
        .env("TMUX_TMPDIR", sandbox.tmux_tmpdir.path())
        .env_remove("TMUX")
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Processes whose command line names `name` (a demo's socket, also its workspace's
/// folder name), other than this test and the tools it runs.
fn processes_naming(name: &str) -> Vec<String> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let c = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let text = String::from_utf8_lossy(&c).replace('\0', " ");
            text.contains(name).then(|| format!("{pid}: {text}"))
        })
        .collect()
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Asserts that nothing of the demo on `socket` is left: no process, no socket file, no
/// workspace, and that no default tmux server was ever made in its TMUX_TMPDIR.
fn assert_nothing_left(sandbox: &Sandbox, socket: &str) {
    let left = poll(Duration::from_secs(3), || {
        let left = processes_naming(socket);
        left.is_empty().then_some(())
    });
    assert!(
        left.is_some(),
        "processes of the demo left: {:#?}",
        processes_naming(socket)
    );
    let sockets = entries(&sandbox.socket_dir());
    assert!(
        !sockets.iter().any(|s| s == "default"),
        "a default tmux server was started: {sockets:?}"
    );
    assert!(
        !sockets.contains(&socket.to_owned()),
        "socket file left: {sockets:?}"
    );
    assert!(
        !sandbox.tmpdir.path().join(socket).exists(),
        "workspace left: {:?}",
        entries(sandbox.tmpdir.path())
    );
    assert!(
        entries(sandbox.decoy_state.path()).is_empty(),
        "the demo wrote into ORCH_STATE_DIR"
    );
}

/// The whole story headless, within 60 s, its events in order; meanwhile a second demo
/// gets a socket of its own and Ctrl-C ends it cleanly.
#[test]
fn headless_demo_tells_the_whole_story_and_leaves_nothing_behind() {
    let sandbox = Sandbox::new();
    let mut first = sandbox.demo(&["--headless"]);
    let socket = first.socket(Duration::from_secs(30));
    assert!(socket.starts_with("orch-demo-"), "{socket}");
    assert!(tmux_has_session(&sandbox, &socket));
    let workspace = sandbox.tmpdir.path().join(&socket);
    assert!(
        workspace.join("repo/.git").is_dir(),
        "the workspace is a git repository"
    );

    // A second demo while the first runs: its own socket, its own session.
    let mut second = sandbox.demo(&["--headless"]);
    let other = second.socket(Duration::from_secs(30));
    assert_ne!(other, socket);
    assert!(tmux_has_session(&sandbox, &other));
    assert!(tmux_has_session(&sandbox, &socket));
    second.interrupt();
    let (status, _, err) = second.finish(Duration::from_secs(20));
    assert_eq!(
        status.code(),
        Some(130),
        "an interrupted demo says so: {err:#?}"
    );
    assert_nothing_left(&sandbox, &other);
    assert!(
        tmux_has_session(&sandbox, &socket),
        "the first demo runs on"
    );

    let started = first.started;
    let (status, out, err) = first.finish(Duration::from_secs(90));
    let took = out
        .last()
        .map_or(started.elapsed(), |(at, _)| at.duration_since(started));
    assert!(
        status.success(),
        "orch demo --headless failed ({status}):\n{}\nits events:\n{}",
        err.join("\n"),
        out.iter()
            .map(|(at, l)| format!("{:>6.1} s {l}", at.duration_since(started).as_secs_f64()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        took < Duration::from_secs(60),
        "the story took {took:?} (at most 60 s at speed 1)"
    );
    eprintln!(
        "orch demo --headless: the story took {:.1} s",
        took.as_secs_f64()
    );

    // stdout is JSON lines only, and the story's events came in its order.
    let events: Vec<serde_json::Value> = out
        .iter()
        .map(|(_, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    let story = orch::demo::Story::builtin().expect("story");
    let mut matched = 0;
    for ev in &events {
        if story.expect.get(matched).is_some_and(|e| e.matches(ev)) {
            matched += 1;
        }
    }
    assert_eq!(
        matched,
        story.expect.len(),
        "events out of the story's order; matched {matched}, next {:?}",
        story.expect.get(matched)
    );
    for kind in [
        "agent_restarted",
        "agent_fatal",
        "agent_stalled",
        "memory_leak",
        "message_delivered",
        "snapshot_written",
        "check_failed",
        "rollback_proposed",
        "rollback_executed",
    ] {
        assert!(events.iter().any(|e| e["kind"] == kind), "no {kind} event");
    }
    // The ACL at work: bosses split the work with `orch send` from inside their panes.
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "message_delivered" && e["from"] == "boss1")
    );
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "message_refused" && e["from"] == "worker6")
    );
    assert!(
        err.iter().any(|l| l.contains("approving rollback")),
        "{err:#?}"
    );
    assert_nothing_left(&sandbox, &socket);
}

/// `--keep` leaves the session and the workspace, and says how to remove them.
#[test]
fn keep_leaves_the_session_and_the_workspace() {
    let sandbox = Sandbox::new();
    let mut demo = sandbox.demo(&["--headless", "--keep"]);
    let socket = demo.socket(Duration::from_secs(30));
    let workspace = sandbox.tmpdir.path().join(&socket);
    demo.interrupt();
    let (status, _, err) = demo.finish(Duration::from_secs(20));
    assert_eq!(status.code(), Some(130), "{err:#?}");
    let said = err.join("\n");
    assert!(said.contains("kept the agents' session"), "{said}");
    assert!(
        said.contains(&format!("tmux -L {socket} kill-server")),
        "{said}"
    );
    assert!(tmux_has_session(&sandbox, &socket), "the session is kept");
    assert!(
        workspace.join("repo/orch.yaml").is_file(),
        "the workspace is kept"
    );
    // The supervisor is not: the user attaches to agents, not to a background process.
    let supervisors: Vec<String> = processes_naming(&socket)
        .into_iter()
        .filter(|p| p.contains(" supervise"))
        .collect();
    assert!(supervisors.is_empty(), "{supervisors:#?}");

    // Removed as the message says (the server by its socket only).
    let _ = Command::new("tmux")
        .args(["-L", &socket, "kill-server"])
        .env("TMUX_TMPDIR", sandbox.tmux_tmpdir.path())
        .status();
    let _ = std::fs::remove_dir_all(&workspace);
    let _ = std::fs::remove_file(sandbox.socket_dir().join(&socket));
    // The transcript writer leaves on its own once its panes are gone (after 5 s idle).
    assert!(
        poll(Duration::from_secs(10), || processes_naming(&socket)
            .is_empty()
            .then_some(()))
        .is_some(),
        "{:#?}",
        processes_naming(&socket)
    );
}
