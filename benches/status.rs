//! `cargo bench --bench status`: how long `orch status --json` takes and how many tmux
//! processes it starts, for 9, 50 and 200 agents on a private tmux server; plus `layout up`
//! and `layout down` for 9 agents. Prints medians over repeated runs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 31;

struct Server {
    socket: String,
    dir: tempfile::TempDir,
}

impl Server {
    fn new(tag: &str) -> Self {
        let socket = format!("orch-bench-{}-{tag}", std::process::id());
        Self {
            socket,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn orch(&self, args: &[&str], path: Option<&str>) -> Duration {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orch"));
        cmd.arg("--socket")
            .arg(&self.socket)
            .args(args)
            .current_dir(self.dir.path());
        cmd.env("ORCH_STATE_DIR", self.dir.path().join("state"))
            .env_remove("TMUX")
            .env_remove("ORCH_LAYOUT");
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        if let Some(p) = path {
            cmd.env("PATH", p);
        }
        let start = Instant::now();
        let status = cmd.status().expect("run orch");
        let elapsed = start.elapsed();
        assert!(status.success(), "orch {args:?} failed");
        elapsed
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(Stdio::null())
            .status();
        let uid = rustix::process::getuid().as_raw();
        let _ = std::fs::remove_file(format!("/tmp/tmux-{uid}/{}", self.socket));
    }
}

fn layout(agents: usize) -> String {
    let mut yaml = String::from("session: bench\nagents:\n");
    for i in 0..agents {
        yaml.push_str(&format!(
            "  - {{ name: a{i}, role: WORKER, command: 'exec sleep 3600' }}\n"
        ));
    }
    yaml
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A `tmux` wrapper first on PATH that counts its invocations.
fn counting_path(dir: &Path) -> (String, std::path::PathBuf) {
    let real = String::from_utf8_lossy(
        &Command::new("sh")
            .args(["-c", "command -v tmux"])
            .output()
            .expect("sh")
            .stdout,
    )
    .trim()
    .to_owned();
    let log = dir.join("tmux-calls.log");
    let wrapper = dir.join("tmux");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho x >> '{}'\nexec '{real}' \"$@\"\n",
            log.display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (
        format!(
            "{}:{}",
            dir.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
        log,
    )
}

fn main() {
    println!("orch status --json, median of {RUNS} runs (release build, private tmux server)");
    for agents in [9, 50, 200] {
        let s = Server::new(&agents.to_string());
        std::fs::write(s.dir.path().join("orch.yaml"), layout(agents)).expect("write");
        let up = s.orch(&["layout", "up"], None);
        let times: Vec<Duration> = (0..RUNS)
            .map(|_| s.orch(&["status", "--json"], None))
            .collect();
        let bin = tempfile::tempdir().expect("dir");
        let (path, log) = counting_path(bin.path());
        s.orch(&["status", "--json"], Some(&path));
        let calls = std::fs::read_to_string(&log)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        println!(
            "  {agents:>3} agents: status {} (min {}), tmux processes per status: {calls}; layout up: {}",
            ms(median(times.clone())),
            ms(times.iter().min().copied().unwrap_or_default()),
            ms(up)
        );
    }

    let mut ups = Vec::new();
    let mut downs = Vec::new();
    for i in 0..5 {
        let s = Server::new(&format!("updown{i}"));
        std::fs::write(s.dir.path().join("orch.yaml"), layout(9)).expect("write");
        ups.push(s.orch(&["layout", "up"], None));
        downs.push(s.orch(&["layout", "down"], None));
    }
    println!(
        "layout up, 9 agents, new server: median {} over 5",
        ms(median(ups))
    );
    println!(
        "layout down, 9 agents (SIGTERM, all exit at once): median {} over 5",
        ms(median(downs))
    );
}
