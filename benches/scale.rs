//! `cargo bench --bench scale`: issue 10's scale figures, with 9 agents and with 200, on
//! a private tmux server per run.
//!
//! 1. Detection under load: `kill -9` of agents in turn while `orch status --json` is
//!    polled once a second; kill → `agent_exited` (the event's `ts`), p50/p99/max.
//! 2. `orch send all`: wall time until every agent's screen showed the message and Enter
//!    was sent (median of runs), with the supervisor running.
//! 3. A flooding agent (`yes`) among idle ones: CPU of the supervisor and of the tmux
//!    server, % of one core.
//! 4. Idle: tmux processes the supervisor starts per second (a counting `tmux` wrapper
//!    first on PATH), and its CPU.
//!
//! Knobs: `ORCH_BENCH_SCALE_AGENTS` ("9,200"), `ORCH_BENCH_SCALE_KILLS` (40),
//! `ORCH_BENCH_SCALE_SENDS` (5), `ORCH_BENCH_SCALE_SECS` (20, for 3 and 4).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

struct Run {
    socket: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    events: Receiver<Value>,
    seen: Vec<Value>,
}

impl Run {
    fn start(tag: &str, yaml: &str, counting: bool) -> Run {
        let dir = tempfile::tempdir().expect("dir");
        let socket = format!("orch-bench-scale-{}-{tag}", std::process::id());
        std::fs::write(dir.path().join("orch.yaml"), yaml).expect("layout");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orch"));
        cmd.args(["--socket", &socket, "supervise"])
            .current_dir(dir.path())
            .env("ORCH_STATE_DIR", dir.path().join("state"))
            .env_remove("TMUX")
            .env_remove("ORCH_LAYOUT")
            .env_remove("ORCH_SOCKET")
            .env_remove("ORCH_SESSION")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if counting {
            let bin = dir.path().join("bin");
            std::fs::create_dir(&bin).expect("bin");
            cmd.env("PATH", support::counting_path(&bin).0);
        }
        let mut child = cmd.spawn().expect("orch supervise");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Run {
            socket,
            dir,
            child: Some(child),
            events,
            seen: Vec::new(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn wait(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.seen.iter().position(&pred) {
            return self.seen.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if pred(&v) => return v,
                Ok(v) => self.seen.push(v),
                Err(_) => panic!("no {what} within {timeout:?}"),
            }
        }
    }

    fn started(&mut self, agents: usize) -> Vec<u32> {
        let mut pids = vec![0; agents];
        let mut left = agents;
        while left > 0 {
            let ev = self.wait("agent_started", Duration::from_secs(120), |e| {
                e["kind"] == "agent_started"
            });
            let i: usize = ev["agent"].as_str().expect("agent")[1..]
                .parse()
                .expect("index");
            if pids[i] == 0 {
                left -= 1;
            }
            pids[i] = ev["pid"].as_u64().expect("pid") as u32;
        }
        pids
    }

    fn orch(&self, args: &[&str]) -> (Duration, String) {
        orch_in(&self.socket, self.dir.path(), args)
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn orch_in(socket: &str, dir: &std::path::Path, args: &[&str]) -> (Duration, String) {
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["--socket", socket])
        .args(args)
        .current_dir(dir)
        .env("ORCH_STATE_DIR", dir.join("state"))
        .env_remove("TMUX")
        .env_remove("ORCH_AGENT")
        .env_remove("ORCH_SESSION")
        .stdin(Stdio::null())
        .output()
        .expect("orch");
    (
        t0.elapsed(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), Signal::TERM);
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(Stdio::null())
            .status();
        let uid = rustix::process::getuid().as_raw();
        let _ = std::fs::remove_file(format!("/tmp/tmux-{uid}/{}", self.socket));
    }
}

fn signal(pid: u32, sig: Signal) {
    if let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(p, sig);
    }
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn signed_ms(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}

/// Agents that show what is pasted (no echo, no line discipline), and die on kill -9.
fn echo_layout(agents: usize) -> String {
    let mut y = String::from(
        "session: scale\ndefaults:\n  restart: { policy: always, max_restarts: 100000, window: 1s, \
         min_uptime: 1ms, backoff: { initial: 1ms, max: 1ms } }\nagents:\n",
    );
    for i in 0..agents {
        y.push_str(&format!(
            "  - {{ name: a{i}, role: WORKER, command: 'stty -echo -icanon; exec tee -a /dev/null' }}\n"
        ));
    }
    y
}

fn idle_layout(agents: usize, flood: bool) -> String {
    let mut y = String::from("session: scale\nagents:\n");
    for i in 0..agents {
        let cmd = if flood && i == 0 {
            "yes"
        } else {
            "exec sleep 3600"
        };
        y.push_str(&format!(
            "  - {{ name: a{i}, role: WORKER, command: '{cmd}' }}\n"
        ));
    }
    y
}

fn detection_and_send(agents: usize) {
    let kills = support::env_num("ORCH_BENCH_SCALE_KILLS", 40) as usize;
    let sends = support::env_num("ORCH_BENCH_SCALE_SENDS", 5) as usize;
    let mut run = Run::start(&format!("kill{agents}"), &echo_layout(agents), false);
    let mut pids = run.started(agents);
    run.wait("start-up snapshot", Duration::from_secs(60), |e| {
        e["kind"] == "snapshot_written"
    });
    std::thread::sleep(Duration::from_secs(2));

    // `orch status --json` once a second throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let status_times = Arc::new(Mutex::new(Vec::new()));
    let poller = {
        let (stop, times) = (stop.clone(), status_times.clone());
        let (socket, dir) = (run.socket.clone(), run.dir.path().to_path_buf());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (took, _) = orch_in(&socket, &dir, &["status", "--json"]);
                if let Ok(mut t) = times.lock() {
                    t.push(took.as_secs_f64() * 1000.0);
                }
                std::thread::sleep(Duration::from_secs(1).saturating_sub(took));
            }
        })
    };

    std::thread::sleep(Duration::from_secs(1));
    let mut took = Vec::new();
    for n in 0..sends {
        let (t, out) = run.orch(&["send", "all", &format!("broadcast number {n} to everyone")]);
        let delivered = out.matches("delivered").count();
        assert_eq!(delivered, agents, "send all {n}: {out}");
        took.push(t.as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    std::thread::sleep(Duration::from_secs(1));
    let mut detect = Vec::new();
    for k in 0..kills {
        let i = (k * 7) % agents;
        let name = format!("a{i}");
        let wall = SystemTime::now();
        signal(pids[i], Signal::KILL);
        let ev = run.wait(
            &format!("agent_exited {name}"),
            Duration::from_secs(10),
            |e| e["kind"] == "agent_exited" && e["agent"] == name.as_str(),
        );
        let ts = ev["ts"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .expect("ts");
        detect.push(signed_ms(ts, wall));
        let re = run.wait(
            &format!("agent_restarted {name}"),
            Duration::from_secs(10),
            |e| e["kind"] == "agent_restarted" && e["agent"] == name.as_str(),
        );
        pids[i] = re["pid"].as_u64().expect("pid") as u32;
        std::thread::sleep(Duration::from_millis(100));
    }
    detect.sort_by(f64::total_cmp);
    println!(
        "  {agents:>3} agents: kill -9 → agent_exited ts, {kills} kills, status polled 1/s: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms   (target p99 ≤ 100 ms)",
        pct(&detect, 0.5),
        pct(&detect, 0.99),
        detect[detect.len() - 1]
    );

    stop.store(true, Ordering::Relaxed);
    let _ = poller.join();
    let mut st = status_times.lock().map(|t| t.clone()).unwrap_or_default();
    st.sort_by(f64::total_cmp);
    println!(
        "  {agents:>3} agents: orch send all, supervised: median {:.0} ms (min {:.0}, max {:.0}) over {sends}   (target ≤ 1000 ms at 200)",
        pct(&took, 0.5),
        took[0],
        took[took.len() - 1]
    );
    if !st.is_empty() {
        println!(
            "  {agents:>3} agents: orch status --json while it ran: median {:.0} ms, max {:.0} ms over {}",
            pct(&st, 0.5),
            st[st.len() - 1],
            st.len()
        );
    }
}

/// CPU (% of one core) of the supervisor and the tmux server, and tmux processes per
/// second, over `secs` after a settle.
fn measure(run: &Run, secs: u64) -> (f64, f64, f64) {
    let pid = run.pid();
    let server: u32 = run
        .tmux(&["display-message", "-p", "#{pid}"])
        .trim()
        .parse()
        .unwrap_or(0);
    let calls = || {
        std::fs::read_to_string(run.dir.path().join("bin/tmux-calls.log"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let (s0, t0, c0, at) = (
        support::cpu_ticks(pid),
        support::cpu_ticks(server),
        calls(),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(secs));
    let el = at.elapsed().as_secs_f64();
    let p = |t: u64| t as f64 / support::CLOCK_TICKS / el * 100.0;
    (
        p(support::cpu_ticks(pid) - s0),
        p(support::cpu_ticks(server) - t0),
        (calls() - c0) as f64 / el,
    )
}

fn flood_and_idle(agents: usize) {
    let secs = support::env_num("ORCH_BENCH_SCALE_SECS", 20);
    {
        let mut run = Run::start(&format!("flood{agents}"), &idle_layout(agents, true), true);
        run.started(agents);
        std::thread::sleep(Duration::from_secs(3));
        let (sup, srv, forks) = measure(&run, secs);
        println!(
            "  {agents:>3} agents, one printing `yes`: supervisor {sup:.2} % of a core (target ≤ 5 %), tmux server {srv:.1} %, {forks:.2} tmux processes/s",
        );
    }
    {
        let mut run = Run::start(&format!("idle{agents}"), &idle_layout(agents, false), true);
        run.started(agents);
        std::thread::sleep(Duration::from_secs(3));
        let (sup, srv, forks) = measure(&run, secs);
        println!(
            "  {agents:>3} agents, idle: supervisor {sup:.3} % of a core, tmux server {srv:.3} %, {forks:.2} tmux processes/s (target 0)",
        );
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("ORCH_BENCH_SCALE_AGENTS")
        .unwrap_or_else(|_| "9,200".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!(
        "orch at scale (release build, private tmux server per run; CPU resolution {:.2} % over {} s)",
        100.0 / support::CLOCK_TICKS / support::env_num("ORCH_BENCH_SCALE_SECS", 20) as f64,
        support::env_num("ORCH_BENCH_SCALE_SECS", 20)
    );
    for &n in &sizes {
        detection_and_send(n);
    }
    for &n in &sizes {
        flood_and_idle(n);
    }
}
