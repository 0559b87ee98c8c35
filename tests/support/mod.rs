//! Test support: a private tmux server per test, the orch binary, throwaway state.
//!
//! Every test gets its own socket (`tmux -L orch-test-<pid>-<n>-<nanos>`), state dir and
//! HOME, and its guard kills only that server (by socket) and removes its socket file.
//! Nothing here touches the default tmux server or signals processes by name.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub struct TestEnv {
    pub socket: String,
    /// Working directory of orch commands; layouts go here.
    pub dir: tempfile::TempDir,
    pub state: tempfile::TempDir,
    pub home: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> Self {
        Self::in_dir(&std::env::temp_dir())
    }

    /// A test env whose folders are under the build's own temp dir rather than `/tmp`:
    /// Gemini CLI refuses settings files below a directory others may write to.
    pub fn outside_tmp() -> Self {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(&base).expect("target tmp dir");
        Self::in_dir(&base)
    }

    fn in_dir(base: &Path) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let state = tempfile::tempdir_in(base).expect("temp state dir");
        // As orch itself would create it: private.
        std::fs::set_permissions(
            state.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod");
        Self {
            socket: format!("orch-test-{}-{n}-{nanos}", std::process::id()),
            dir: tempfile::tempdir_in(base).expect("temp dir"),
            state,
            home: tempfile::tempdir_in(base).expect("temp home"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file under the working directory and returns its path.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write");
        path
    }

    /// The orch binary, pointed at this test's socket, state dir and working directory,
    /// with nothing inherited that could point it elsewhere.
    pub fn orch_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orch"));
        cmd.arg("--socket")
            .arg(&self.socket)
            .args(args)
            .current_dir(self.path())
            .env("ORCH_STATE_DIR", self.state.path())
            .env("HOME", self.home.path())
            // Tests run the supervisor themselves, where they want one.
            .env("ORCH_NO_SUPERVISE", "1")
            .env_remove("ORCH_LAYOUT")
            .env_remove("ORCH_SESSION")
            .env_remove("ORCH_SOCKET")
            .env_remove("TMUX")
            .env_remove("XDG_STATE_HOME")
            .stdin(Stdio::null());
        cmd
    }

    pub fn orch(&self, args: &[&str]) -> Output {
        self.orch_command(args).output().expect("run orch")
    }

    /// Runs orch and insists it succeeded; returns stdout.
    pub fn orch_ok(&self, args: &[&str]) -> String {
        succeeded(args, &self.orch(args))
    }

    /// Runs tmux on this test's socket and returns stdout ("" if it failed).
    pub fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `(pane id, @orch_agent, pid, dead)` of every pane of `session`.
    pub fn panes(&self, session: &str) -> Vec<PaneRow> {
        self.tmux(&[
            "list-panes",
            "-s",
            "-t",
            &format!("={session}"),
            "-F",
            "#{pane_id}\t#{@orch_agent}\t#{pane_pid}\t#{pane_dead}\t#{@orch_role}\t#{pane_title}",
        ])
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            PaneRow {
                id: f[0].to_owned(),
                agent: f[1].to_owned(),
                pid: f[2].parse().unwrap_or(0),
                dead: f[3] == "1",
                role: f[4].to_owned(),
                title: f[5].to_owned(),
            }
        })
        .collect()
    }

    pub fn pane_of(&self, session: &str, agent: &str) -> PaneRow {
        self.panes(session)
            .into_iter()
            .find(|p| p.agent == agent)
            .unwrap_or_else(|| panic!("no pane for agent {agent}"))
    }

    pub fn session_exists(&self, session: &str) -> bool {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(["has-session", "-t", &format!("={session}")])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaneRow {
    pub id: String,
    pub agent: String,
    pub pid: u32,
    pub dead: bool,
    pub role: String,
    pub title: String,
}

impl TestEnv {
    /// Kills this test's own tmux server (by its socket; never another).
    pub fn kill_server(&self) {
        let args = ["-L", self.socket.as_str(), "kill-server"];
        let _ = Command::new("tmux")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.stop_background_supervisors();
        self.kill_server();
        kill_stragglers(&self.socket);
        // tmux leaves its socket file behind; remove ours (and only ours).
        let uid = rustix::process::getuid().as_raw();
        let dir =
            std::env::var_os("TMUX_TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
        let _ = std::fs::remove_file(dir.join(format!("tmux-{uid}")).join(&self.socket));
    }
}

impl TestEnv {
    /// SIGTERMs (then SIGKILLs) the supervisors `orch` or `orch layout up` started in the
    /// background for this test: those whose lock is in this test's state dir and whose
    /// command line names this test's socket.
    fn stop_background_supervisors(&self) {
        let ours = |pid: u32| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.windows(2)
                    .any(|w| w[0] == b"--socket" && w[1] == self.socket.as_bytes())
            })
        };
        let pids: Vec<u32> = std::fs::read_dir(self.state.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("supervisor.lock")).ok())
            .filter_map(|t| t.trim().parse().ok())
            .filter(|pid| ours(*pid))
            .collect();
        let signal = |pid: u32, sig| {
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(p, sig);
            }
        };
        for pid in &pids {
            signal(*pid, rustix::process::Signal::TERM);
        }
        for _ in 0..200 {
            if pids.iter().all(|pid| !ours(*pid)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for pid in pids.into_iter().filter(|pid| ours(*pid)) {
            signal(pid, rustix::process::Signal::KILL);
        }
    }
}

/// The stdout of `orch ARGS`, which must have succeeded (else the test fails showing
/// both outputs).
pub fn succeeded(args: &[&str], out: &Output) -> String {
    assert!(
        out.status.success(),
        "orch {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// SIGKILLs what is left of this test's tmux after `kill-server`: processes whose command
/// line names its socket (`-L orch-test-…`, unique to the test). A control-mode client
/// whose supervisor was SIGKILLed can keep a server from exiting (seen on tmux 3.3a in
/// about one full run in three); once the socket file is removed, nothing could reach
/// them any more.
fn kill_stragglers(socket: &str) {
    let owned = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.windows(2)
                .any(|w| w[0] == b"-L" && w[1] == socket.as_bytes())
        })
    };
    for _ in 0..20 {
        let left: Vec<u32> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|pid| owned(*pid))
            .collect();
        if left.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
        if left.iter().all(|pid| !owned(*pid)) {
            return;
        }
        for pid in left.into_iter().filter(|pid| owned(*pid)) {
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
    }
}

/// A layout: `head` (session and settings, each line ending with a newline), then `n`
/// WORKER agents `a0`…, agent `i` running `command(i)` (inside single quotes in YAML).
pub fn workers(head: &str, n: usize, command: impl Fn(usize) -> String) -> String {
    let mut yaml = format!("{head}agents:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - {{ name: a{i}, role: WORKER, command: '{}' }}\n",
            command(i)
        ));
    }
    yaml
}

/// Writes `dir/tmux`, a shell script that runs `before` and then the real tmux with the
/// same arguments, and returns a PATH that finds it first.
pub fn tmux_wrapper(dir: &Path, before: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let out = Command::new("sh")
        .args(["-c", "command -v tmux"])
        .output()
        .expect("sh");
    let real = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    std::fs::create_dir_all(dir).expect("wrapper dir");
    let wrapper = dir.join("tmux");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\n{before}\nexec '{real}' \"$@\"\n"),
    )
    .expect("write wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Polls `f` until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll(timeout, f).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `f` until it returns `Some`, or gives up after `timeout`.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[allow(unused_imports)]
pub use orch::process::alive;

/// All descendants of `pid` (and `pid`), from /proc.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
            parents.push((p, ppid));
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

/// A running `orch supervise` and the events it prints.
pub struct Supervisor {
    pub child: Child,
    events: mpsc::Receiver<serde_json::Value>,
    pub seen: Vec<serde_json::Value>,
}

impl Supervisor {
    pub fn start(env: &TestEnv) -> Supervisor {
        Supervisor::start_with(env, &[])
    }

    /// Starts `orch supervise` with extra environment variables.
    pub fn start_with(env: &TestEnv, vars: &[(&str, &str)]) -> Supervisor {
        let mut cmd = env.orch_command(&["supervise"]);
        cmd.envs(vars.iter().copied());
        Supervisor::spawn(cmd)
    }

    /// Runs `cmd`, which ends up running `orch supervise` (possibly through a wrapper
    /// that execs it), and reads its events.
    pub fn spawn(mut cmd: Command) -> Supervisor {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn supervise");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("bad event line {line:?}: {e}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Supervisor {
            child,
            events: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for the next event of `kind` for `agent` (any agent if `None`).
    pub fn expect(
        &mut self,
        kind: &str,
        agent: Option<&str>,
        timeout: Duration,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(ev) => {
                    self.seen.push(ev.clone());
                    if ev["kind"] == kind && agent.is_none_or(|a| ev["agent"] == a) {
                        return ev;
                    }
                }
                Err(_) => panic!(
                    "no {kind} event for {agent:?} within {timeout:?}; saw {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Every event that arrives within `d`.
    pub fn drain_for(&mut self, d: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + d;
        let mut got = Vec::new();
        while let Ok(ev) = self
            .events
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(ev.clone());
            got.push(ev);
        }
        got
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, sig).expect("signal supervisor");
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nine agents of the organisation the full-size tests run.
pub const ORGANISATION: [&str; 9] = [
    "president",
    "boss1",
    "boss2",
    "worker1",
    "worker2",
    "worker3",
    "worker4",
    "worker5",
    "worker6",
];

/// git in `dir` as `who` (author and committer), with the machine's global and system
/// configuration kept out.
pub fn git_command(env: &TestEnv, dir: &Path, who: &str, args: &[&str]) -> Command {
    let mut c = Command::new("git");
    c.args(args)
        .current_dir(dir)
        .env("HOME", env.home.path())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", who)
        .env("GIT_AUTHOR_EMAIL", format!("{who}@example.com"))
        .env("GIT_COMMITTER_NAME", who)
        .env("GIT_COMMITTER_EMAIL", format!("{who}@example.com"));
    c
}

/// [`git_command`], which must succeed; returns its stdout, trimmed.
pub fn git_as(env: &TestEnv, dir: &Path, who: &str, args: &[&str]) -> String {
    let out = git_command(env, dir, who, args).output().expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
