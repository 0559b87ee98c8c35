//! `orch demo`: a simulated organisation of nine agents in a throwaway workspace, on a tmux
//! server and a state dir of its own, supervised by a real `orch supervise`.
//!
//! Invariants:
//! - Nothing of the user's is used or touched: the tmux socket is the demo's own
//!   (`orch-demo-<pid>-<nanos>`, also the name of its workspace folder, so every process
//!   of the demo names it on its command line), the state dir is inside the workspace, and
//!   the user's ORCH_*, TMUX and GIT_DIR-like variables are kept out of every process
//!   it starts.
//! - Ending it (quitting, Ctrl-C, an error, a panic) stops its supervisor, kills its own
//!   tmux server by socket, and removes the workspace — unless `--keep`, which leaves the
//!   session and the workspace and says where they are.
//!
//! The story comes from [`story`]; [`Progress`] follows it through the event journal.

pub mod story;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::layout::Layout;
use crate::state::StateDir;
use crate::supervisor::store::{JOURNAL_FILE, journal_records};
use crate::tmux::Tmux;
pub use story::{Expect, Story};

/// Variables of the user's environment that would point the demo's processes at the
/// user's own tmux, orch state or git repository.
const FOREIGN_VARS: &[&str] = &[
    "ORCH_SOCKET",
    "ORCH_STATE_DIR",
    "ORCH_LAYOUT",
    "ORCH_SESSION",
    "ORCH_AGENT",
    "ORCH_ROLE",
    "ORCH_PROFILE",
    "TMUX",
    "TMUX_PANE",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_COMMON_DIR",
];

/// Where the supervisor's stderr goes (in the session's state folder).
const SUPERVISOR_STDERR: &str = "demo-supervisor.stderr";

/// How long the supervisor may take to bring the session up.
const UP_WITHIN: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Every delay of the story is divided by this.
    pub speed: f64,
    /// Leave the session and the workspace when the demo ends.
    pub keep: bool,
}

/// A running demo. Dropping it ends it (see the module docs).
pub struct Demo {
    /// Declared first, so it goes before the workspace (and its tmux server) does.
    supervisor: Option<Child>,
    pub layout: Layout,
    pub speed: f64,
    pub workspace: Workspace,
}

/// The demo's folder and tmux server. Dropping it removes both, unless kept.
pub struct Workspace {
    /// The tmux socket name, which is also the folder's name.
    pub socket: String,
    pub dir: PathBuf,
    pub repo: PathBuf,
    pub state: StateDir,
    pub layout_file: PathBuf,
    pub scripts: PathBuf,
    keep: bool,
    server: Option<crate::tmux::ServerInfo>,
    removed: bool,
}

/// What was left behind when the demo ended.
#[derive(Debug)]
pub enum Ending {
    Removed,
    /// `--keep`: the session and the workspace are still there.
    Kept {
        attach: String,
        workspace: PathBuf,
        remove: String,
    },
}

impl Demo {
    /// Makes the workspace, starts the supervisor (which brings the session up) and waits
    /// until the agents' session exists. On an error, what was made is removed again.
    pub fn start(story: &Story, opts: Options) -> Result<Demo> {
        if !(opts.speed.is_finite() && opts.speed > 0.0) {
            return Err(crate::error::BadInput(format!(
                "--speed {}: give a number above 0, e.g. 2 for twice as fast",
                opts.speed
            ))
            .into());
        }
        let socket = unique_name();
        let dir = std::env::temp_dir().join(&socket);
        let mut workspace = Workspace {
            repo: dir.join("repo"),
            state: StateDir::resolve(Some(dir.join("state")))?,
            // Where `orch send` inside a pane (whose cwd is the repository) finds it.
            layout_file: dir.join("repo").join("orch.yaml"),
            scripts: dir.join("scripts"),
            dir,
            socket,
            // Kept only once the demo ran: a failed start leaves nothing behind.
            keep: false,
            server: None,
            removed: false,
        };
        let layout = workspace.prepare(story, opts.speed)?;
        let mut demo = Demo {
            supervisor: None,
            layout,
            speed: opts.speed,
            workspace,
        };
        demo.spawn_supervisor()?;
        demo.wait_until_up()?;
        demo.workspace.keep = opts.keep;
        Ok(demo)
    }

    fn spawn_supervisor(&mut self) -> Result<()> {
        let exe = std::env::current_exe().context("finding the orch binary")?;
        let dir = self.session_dir()?;
        let stderr = crate::state::open_append(&dir.join(SUPERVISOR_STDERR))?;
        let ws = &self.workspace;
        let mut cmd = Command::new(exe);
        cmd.arg("--socket")
            .arg(&ws.socket)
            .arg("--state-dir")
            .arg(ws.state.root())
            .arg("--layout")
            .arg(&ws.layout_file)
            .arg("supervise")
            .current_dir(&ws.repo)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        isolate(&mut cmd);
        // Its own process group: a Ctrl-C in the terminal reaches the demo, which then
        // stops the supervisor itself, in the right order.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        self.supervisor = Some(cmd.spawn().context("starting orch supervise")?);
        Ok(())
    }

    fn wait_until_up(&mut self) -> Result<()> {
        let deadline = Instant::now() + UP_WITHIN;
        let session = self.session().to_owned();
        let tmux = self.tmux();
        loop {
            if let Some(child) = self.supervisor.as_mut()
                && let Some(status) = child.try_wait()?
            {
                let err = std::fs::read_to_string(self.session_dir()?.join(SUPERVISOR_STDERR))
                    .unwrap_or_default();
                bail!(
                    "the demo's supervisor stopped ({status}) before the session was up: {}",
                    err.trim()
                );
            }
            if tmux.has_session(&session).unwrap_or(false) {
                self.workspace.server = tmux.server_info().ok().flatten();
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the demo's session did not come up within {} s",
                    UP_WITHIN.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn session(&self) -> &str {
        self.layout.session.as_str()
    }

    pub fn tmux(&self) -> Tmux {
        Tmux::new(Some(self.workspace.socket.clone()))
    }

    /// `<state>/<session>/`, where the journal, the control socket and the gate live.
    pub fn session_dir(&self) -> Result<PathBuf> {
        self.workspace.state.session_dir(self.session())
    }

    /// The one line that tells how to look at the agents.
    pub fn attach_command(&self) -> String {
        format!(
            "tmux -L {} attach -t {}",
            self.workspace.socket,
            self.session()
        )
    }

    /// Whether the supervisor still runs.
    pub fn supervising(&mut self) -> bool {
        self.supervisor
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Reads the session's event journal from its start.
    pub fn journal(&self) -> Result<Journal> {
        Ok(Journal {
            path: self.session_dir()?.join(JOURNAL_FILE),
            offset: 0,
            pending: Vec::new(),
        })
    }

    /// Ends the demo: stops the supervisor, then (without `--keep`) kills the demo's tmux
    /// server, anything of its own that outlived it, and the workspace.
    pub fn end(mut self) -> Result<Ending> {
        self.stop_supervisor();
        let attach = self.attach_command();
        let ws = &mut self.workspace;
        if ws.keep {
            return Ok(Ending::Kept {
                attach,
                workspace: ws.dir.clone(),
                remove: format!(
                    "tmux -L {} kill-server; rm -rf {}",
                    ws.socket,
                    crate::tmux::shell_quote(&ws.dir.to_string_lossy())
                ),
            });
        }
        ws.remove()?;
        Ok(Ending::Removed)
    }

    /// SIGTERM, then SIGKILL after a grace: it must be gone before the server is, or it
    /// would see the server die and act on it.
    fn stop_supervisor(&mut self) {
        let Some(mut child) = self.supervisor.take() else {
            return;
        };
        crate::process::signal(
            child.id(),
            crate::process::Sig::Stop(crate::layout::StopSignal::Terminate),
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // Then the workspace's own drop removes the rest.
        self.stop_supervisor();
    }
}

impl Workspace {
    /// The repository, the layout file and the scripts; returns the layout.
    fn prepare(&mut self, story: &Story, speed: f64) -> Result<Layout> {
        crate::state::create_private_dir(&self.dir)?;
        crate::state::create_private_dir(&self.repo)?;
        crate::state::create_private_dir(&self.scripts)?;
        make_repo(&self.repo, &story.project)?;
        let exe = std::env::current_exe().context("finding the orch binary")?;
        let text = story.layout_text(
            speed,
            &story::Paths {
                repo: &self.repo,
                scripts: &self.scripts,
                exe: &exe,
            },
        )?;
        crate::state::atomic_write(&self.layout_file, text.as_bytes())?;
        let layout =
            crate::layout::load(&crate::layout::LayoutSource::File(self.layout_file.clone()))?;
        for agent in &layout.agents {
            let name = agent.name.as_str();
            let script = story
                .script_for(name, &layout, speed)
                .with_context(|| format!("the story has no part for {name}"))?;
            let yaml = serde_yaml::to_string(&script)?;
            crate::state::atomic_write(
                &self.scripts.join(format!("{name}.yaml")),
                yaml.as_bytes(),
            )?;
        }
        Ok(layout)
    }

    /// Kills the demo's tmux server (by its socket) and its transcript writer (by the pid
    /// in its lock), and removes the folder. (The supervisor, stopped before, took its
    /// control client and any running check with it.)
    fn remove(&mut self) -> Result<()> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        let killed = Tmux::new(Some(self.socket.clone())).kill_server();
        if let Some(server) = &self.server {
            wait_gone(server.pid, Duration::from_secs(3));
        }
        stop_transcript_writers(&self.state);
        if let Some(server) = &self.server {
            let _ = std::fs::remove_file(&server.socket_path);
        }
        let removed = match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", self.dir.display()))
            }
            _ => Ok(()),
        };
        killed.context("killing the demo's tmux server")?;
        removed
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Err(e) = self.remove() {
            tracing::warn!("removing the demo: {e:#}");
        }
    }
}

/// `orch-demo-<pid>-<nanos>`: unique on this machine, so two demos never share a socket.
fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("orch-demo-{}-{nanos}", std::process::id())
}

/// Keeps the user's tmux, orch and git variables out of a process the demo starts.
fn isolate(cmd: &mut Command) {
    for var in FOREIGN_VARS {
        cmd.env_remove(var);
    }
}

/// The throwaway repository: `files` as its first commit on `main`, with an identity and
/// settings of its own so the user's git configuration cannot get in the way.
fn make_repo(repo: &Path, files: &std::collections::BTreeMap<String, String>) -> Result<()> {
    let git = |args: &[&str]| -> Result<()> {
        let mut cmd = Command::new("git");
        cmd.args(args)
            .current_dir(repo)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        isolate(&mut cmd);
        let out = cmd
            .output()
            .context("running git (the demo needs git installed)")?;
        if !out.status.success() {
            bail!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    };
    git(&["init", "-q"])?;
    git(&["symbolic-ref", "HEAD", "refs/heads/main"])?;
    for (key, value) in [
        ("user.name", "you"),
        ("user.email", "demo@orch.invalid"),
        ("commit.gpgsign", "false"),
        ("core.hooksPath", "/dev/null"),
    ] {
        git(&["config", key, value])?;
    }
    for (path, text) in files {
        let path = repo.join(path);
        if let Some(dir) = path.parent() {
            crate::state::create_private_dir(dir)?;
        }
        crate::state::atomic_write(&path, text.as_bytes())?;
    }
    git(&["add", "-A"])?;
    git(&["commit", "-q", "--no-verify", "-m", "greet 1.0"])?;
    Ok(())
}

/// Waits until `pid` is gone, at most `timeout`.
fn wait_gone(pid: u32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while crate::process::alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stops the transcript writers of the demo's sessions: a writer outlives its tmux
/// server for a few seconds, and the workspace it writes into is about to go.
fn stop_transcript_writers(state: &StateDir) {
    let sessions = std::fs::read_dir(state.root())
        .into_iter()
        .flatten()
        .flatten();
    for session in sessions {
        let dir = session.path().join("transcripts");
        if let Some(pid) = crate::session::transcript::writer::holder(&dir) {
            crate::process::signal(pid, crate::process::Sig::Kill);
            wait_gone(pid, Duration::from_secs(3));
        }
    }
}

/// The session's event journal, read as it grows.
pub struct Journal {
    path: PathBuf,
    offset: u64,
    pending: Vec<u8>,
}

impl Journal {
    /// The events appended since the last call, as JSON values with their lines.
    pub fn read_new(&mut self) -> Result<Vec<(String, serde_json::Value)>> {
        use std::io::{Read, Seek};
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        file.seek(std::io::SeekFrom::Start(self.offset))?;
        let mut chunk = Vec::new();
        self.offset += file.read_to_end(&mut chunk)? as u64;
        self.pending.extend_from_slice(&chunk);
        let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') else {
            return Ok(Vec::new());
        };
        let whole: Vec<u8> = self.pending.drain(..=end).collect();
        let (records, _) = journal_records(&whole);
        Ok(records
            .into_iter()
            .filter_map(|line| {
                let v = serde_json::from_str(line).ok()?;
                Some((line.to_owned(), v))
            })
            .collect())
    }
}

/// How far the story has got: the expected events matched so far, in order.
#[derive(Debug)]
pub struct Progress {
    expected: Vec<Expect>,
    matched: usize,
}

impl Progress {
    pub fn new(expected: Vec<Expect>) -> Self {
        Self {
            expected,
            matched: 0,
        }
    }

    /// Records `ev`; returns the expectation it met, if it met the next one.
    pub fn observe(&mut self, ev: &serde_json::Value) -> Option<&Expect> {
        let next = self.expected.get(self.matched)?;
        if !next.matches(ev) {
            return None;
        }
        self.matched += 1;
        self.expected.get(self.matched - 1)
    }

    pub fn done(&self) -> bool {
        self.matched == self.expected.len()
    }

    /// `(matched, all)`.
    pub fn count(&self) -> (usize, usize) {
        (self.matched, self.expected.len())
    }

    /// What has not happened yet, in order.
    pub fn missing(&self) -> &[Expect] {
        &self.expected[self.matched..]
    }
}

/// The proposal a rollback_proposed event asks a human to approve, if it waits for one.
pub fn waiting_proposal(ev: &serde_json::Value) -> Option<&str> {
    if ev["kind"] != "rollback_proposed" || ev["waiting"].is_null() {
        return None;
    }
    ev["id"].as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn progress_follows_the_story_in_order() {
        let story = Story::builtin().expect("story");
        let mut p = Progress::new(story.expect.clone());
        // An event out of order does not count.
        let second = &story.expect[1];
        let mut ev = json!({"kind": second.kind});
        for (k, v) in &second.fields {
            ev[k] = json!(v);
        }
        assert!(p.observe(&ev).is_none());
        for e in &story.expect {
            let mut ev = json!({"kind": e.kind});
            for (k, v) in &e.fields {
                ev[k] = json!(v);
            }
            assert!(p.observe(&json!({"kind": "noise"})).is_none());
            assert_eq!(p.observe(&ev), Some(e));
        }
        assert!(p.done());
        assert!(p.missing().is_empty());
    }

    #[test]
    fn a_proposal_that_waits_is_found() {
        let waits = json!({"kind": "rollback_proposed", "id": "abc", "waiting": "risk medium is above rollback.auto_max_risk (low)"});
        assert_eq!(waiting_proposal(&waits), Some("abc"));
        let auto = json!({"kind": "rollback_proposed", "id": "abc"});
        assert_eq!(waiting_proposal(&auto), None);
    }

    #[test]
    fn names_are_unique() {
        let a = unique_name();
        let b = unique_name();
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("orch-demo-{}-", std::process::id())));
    }
}
