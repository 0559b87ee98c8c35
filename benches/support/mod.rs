//! What the benchmarks share: a private tmux server with its own working and state
//! folders, the orch binary pointed at them, and how numbers are summarised. The server
//! (and only it) is killed by socket when the guard drops.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub socket: String,
    pub dir: tempfile::TempDir,
}

impl Server {
    pub fn new(tag: &str) -> Self {
        Self {
            socket: format!("orch-bench-{}-{tag}", std::process::id()),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Runs orch on this server; panics if it fails. Returns the wall time and stdout.
    pub fn orch(&self, args: &[&str]) -> (Duration, String) {
        self.orch_with(args, &[])
    }

    /// [`Server::orch`] with extra environment variables (e.g. a PATH).
    pub fn orch_with(&self, args: &[&str], envs: &[(&str, &str)]) -> (Duration, String) {
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_orch"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .current_dir(self.dir.path())
            .env("ORCH_STATE_DIR", self.dir.path().join("state"))
            .env_remove("TMUX")
            .env_remove("ORCH_LAYOUT")
            .env_remove("ORCH_AGENT")
            .env_remove("ORCH_SESSION")
            // Benchmarks run the supervisor themselves, where they want one.
            .env("ORCH_NO_SUPERVISE", "1")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run orch");
        let took = start.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "orch {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (took, stdout)
    }

    pub fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A supervisor started in the background (by `orch` or `layout up`) for this
        // server: the lock in our state dir names it, its command line our socket.
        let ours = |pid: u32| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.windows(2)
                    .any(|w| w[0] == b"--socket" && w[1] == self.socket.as_bytes())
            })
        };
        let locks = std::fs::read_dir(self.dir.path().join("state"))
            .into_iter()
            .flatten();
        for entry in locks.flatten() {
            let pid = std::fs::read_to_string(entry.path().join("supervisor.lock"))
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .filter(|pid| ours(*pid));
            if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(Stdio::null())
            .status();
        let uid = rustix::process::getuid().as_raw();
        let _ = std::fs::remove_file(format!("/tmp/tmux-{uid}/{}", self.socket));
    }
}

/// Clock ticks a second (`/proc/PID/stat` counts CPU time in them).
pub const CLOCK_TICKS: f64 = 100.0;

/// A knob: the environment variable `name` as a number, else `default`.
pub fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// utime + stime of `pid`, in clock ticks (0 once it is gone).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A `tmux` wrapper first on PATH that counts its invocations: `(PATH, log file)`.
pub fn counting_path(dir: &Path) -> (String, PathBuf) {
    let out = Command::new("sh")
        .args(["-c", "command -v tmux"])
        .output()
        .expect("sh");
    let real = String::from_utf8_lossy(&out.stdout).trim().to_owned();
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
