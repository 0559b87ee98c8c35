//! Break 9: a full disk made `orch supervise` exit (ENOSPC writing `supervisor.json` or
//! appending to `events.jsonl`), and a dead agent then stayed dead.
//!
//! As root the state dir is a small tmpfs, mounted in a private mount namespace
//! (`unshare -m`) that only the supervisor lives in, and filled from inside it
//! (`nsenter`); nothing leaks into the machine's mounts. Otherwise a file size limit
//! (`ulimit -f`, SIGXFSZ ignored) makes every write past it fail the same way.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::support::{Supervisor, TestEnv};

const LAYOUT: &str = "session: d\ndefaults:\n  restart: { policy: always, max_restarts: 1000, backoff: { initial: 1ms, max: 1ms } }\nagents:\n  - { name: a0, role: WORKER, command: 'exec sleep 600' }\n";

/// How a test fills and frees the supervisor's disk.
enum Disk {
    /// The supervisor's mount namespace and the tmpfs state dir in it.
    Tmpfs { pid: u32, state: String },
    /// A file size limit: nothing to fill, writes fail past it from the start.
    SizeLimit,
}

impl Disk {
    /// Runs `script` in the supervisor's mount namespace with `$0` the state dir, only
    /// if that is the tmpfs there (never anything on the machine's own disk).
    fn in_ns(&self, script: &str) {
        if let Disk::Tmpfs { pid, state } = self {
            let guarded = format!("[ \"$(stat -f -c %T \"$0\")\" = tmpfs ] || exit 3; {script}");
            let out = Command::new("nsenter")
                .args(["-t", &pid.to_string(), "-m", "sh", "-c", &guarded])
                .arg(state)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .expect("nsenter");
            assert_ne!(out.status.code(), Some(3), "the state dir is not the tmpfs");
        }
    }

    fn fill(&self) {
        // The journal first ends on a page boundary (a valid line of padding), or its
        // last page's slack would take a few more events; then at most 8 MiB of filler
        // whatever happens (the tmpfs holds 4).
        self.in_ns(
            "j=\"$0/d/events.jsonl\"; s=$(stat -c %s \"$j\"); n=$(( (4096 - s % 4096) % 4096 )); \
             [ $n -lt 32 ] && n=$((n + 4096)); \
             printf '{\"kind\":\"padding\",\"x\":\"%s\"}\\n' \"$(head -c $((n - 26)) /dev/zero | tr '\\0' x)\" >> \"$j\"; \
             dd if=/dev/zero of=\"$0/filler\" bs=64k count=128 2>/dev/null; \
             for i in 1 2 3 4 5 6 7 8; do head -c 4096 /dev/zero > \"$0/filler$i\" 2>/dev/null; done; true",
        );
    }

    fn free(&self) {
        self.in_ns("rm -f \"$0\"/filler*");
    }
}

fn start(env: &TestEnv) -> (Supervisor, Disk) {
    env.write("orch.yaml", LAYOUT);
    let state = env.state.path().join("small");
    std::fs::create_dir(&state).expect("mkdir");
    let state_s = state.to_string_lossy().into_owned();
    let orch = env.orch_command(&["supervise"]);
    let program = orch.get_program().to_owned();
    let args: Vec<_> = orch.get_args().map(ToOwned::to_owned).collect();
    let root = rustix::process::geteuid().is_root();
    let mut cmd = if root {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg("mount -t tmpfs -o size=4m,mode=0700 tmpfs \"$0\" && shift && exec \"$@\"")
            .arg(&state_s)
            .arg("--");
        c
    } else {
        let mut c = Command::new("sh");
        // 2 MiB per file: the journal soon passes it.
        c.args(["-c", "trap '' XFSZ; ulimit -f 4096; exec \"$@\"", "sh"]);
        c
    };
    cmd.arg(program).args(args).current_dir(env.path());
    for (k, v) in orch.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.env("ORCH_STATE_DIR", &state);
    let sup = Supervisor::spawn(cmd);
    let disk = if root {
        Disk::Tmpfs {
            pid: sup.child.id(),
            state: state_s,
        }
    } else {
        Disk::SizeLimit
    };
    (sup, disk)
}

fn kill(pid: u64) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
}

#[test]
fn a_full_disk_degrades_the_supervisor_and_agents_are_still_restarted() {
    let env = TestEnv::new();
    let (mut sup, disk) = start(&env);
    let started = sup.expect("agent_started", Some("a0"), Duration::from_secs(15));
    sup.expect("snapshot_written", None, Duration::from_secs(10));
    disk.fill();

    // Several deaths on a full disk: each is noticed and restarted.
    let mut pid = started["pid"].as_u64().expect("pid");
    for _ in 0..3 {
        kill(pid);
        sup.expect("agent_exited", Some("a0"), Duration::from_secs(10));
        let restarted = sup.expect("agent_restarted", Some("a0"), Duration::from_secs(10));
        pid = restarted["pid"].as_u64().expect("pid");
    }
    assert!(
        sup.child.try_wait().expect("wait").is_none(),
        "the supervisor is alive"
    );
    let failed: Vec<&serde_json::Value> = sup
        .seen
        .iter()
        .filter(|e| e["kind"] == "write_failed")
        .collect();
    let kinds: Vec<&str> = failed.iter().filter_map(|e| e["what"].as_str()).collect();
    assert!(kinds.contains(&"events"), "{kinds:?}");
    let mut unique = kinds.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        kinds.len(),
        "each kind once, not a flood: {kinds:?}"
    );
    let snapshot_failures = sup
        .seen
        .iter()
        .filter(|e| e["kind"] == "snapshot_failed")
        .count();
    assert!(
        snapshot_failures <= 1,
        "snapshot failures said once: {snapshot_failures}"
    );

    // Space comes back: writing resumes and says so.
    disk.free();
    kill(pid);
    sup.expect("agent_exited", Some("a0"), Duration::from_secs(10));
    let back = sup.expect("write_recovered", None, Duration::from_secs(10));
    assert_eq!(back["what"], "events", "{back}");
    sup.expect("agent_restarted", Some("a0"), Duration::from_secs(10));
    assert!(sup.child.try_wait().expect("wait").is_none());
}
