//! `cargo bench --bench supervise`: `orch supervise` on a private tmux server.
//!
//! 1. Detection: `kill -9` an agent's pane process and compare the wall clock at the kill
//!    with the `ts` of the matching `agent_exited` event (p50/p99/max).
//! 2. Restart: `agent_restarted.ts - agent_exited.ts`, and kill → new pid alive and
//!    running the agent's command again (polled in /proc).
//! 3. Idle cost with 9, 50 and 200 agents: CPU % of one core, RSS, and tmux processes the
//!    supervisor starts per second while nothing happens.
//!
//! Knobs (environment): `ORCH_BENCH_KILLS` (100), `ORCH_BENCH_IDLE_SECS` (60),
//! `ORCH_BENCH_SETTLE_SECS` (5), `ORCH_BENCH_IDLE_AGENTS` ("9,50,200"; "" skips),
//! `ORCH_BENCH_KILL_AGENTS` (9; agents in the kill test, killed in turn),
//! `ORCH_BENCH_HISTORY_LINES` (0; lines each agent prints when it starts, so the snapshot
//! taken at every exit has long histories to deal with).

mod support;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

/// One line `orch supervise` printed, stamped with when the bench read it.
#[derive(Debug)]
struct Event {
    read_at: Instant,
    kind: String,
    agent: Option<String>,
    pid: Option<u32>,
    ts: Option<SystemTime>,
    raw: String,
}

impl Event {
    fn parse(line: String, read_at: Instant) -> Self {
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Self {
            read_at,
            kind: s("kind").unwrap_or_else(|| "<not json>".into()),
            agent: s("agent"),
            pid: v
                .get("pid")
                .and_then(Value::as_u64)
                .and_then(|p| u32::try_from(p).ok()),
            ts: s("ts").and_then(|t| humantime::parse_rfc3339(&t).ok()),
            raw: line,
        }
    }

    fn is(&self, kind: &str, agent: &str) -> bool {
        self.kind == kind && self.agent.as_deref() == Some(agent)
    }

    fn ts(&self) -> SystemTime {
        self.ts
            .unwrap_or_else(|| panic!("event without a parsable ts: {}", self.raw))
    }
}

/// A running `orch --socket S supervise` with its own tmux server, state dir and cwd.
/// Dropping it stops the supervisor (SIGTERM, then SIGKILL) and kills its tmux server,
/// even while a panic unwinds.
struct Supervisor {
    socket: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    events: Receiver<Event>,
    /// Events read but not yet asked for.
    pending: VecDeque<Event>,
}

impl Supervisor {
    fn start(tag: &str, yaml: &str, counting: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = format!("orch-bench-sup-{}-{tag}", std::process::id());
        std::fs::write(dir.path().join("orch.yaml"), yaml).expect("write orch.yaml");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orch"));
        cmd.arg("--socket")
            .arg(&socket)
            .arg("supervise")
            .current_dir(dir.path())
            .env("ORCH_STATE_DIR", dir.path().join("state"))
            .env_remove("TMUX")
            .env_remove("ORCH_LAYOUT")
            .env_remove("ORCH_SOCKET")
            .env_remove("ORCH_SESSION")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("supervise.stderr")).expect("stderr"));
        if counting {
            let bin = dir.path().join("bin");
            std::fs::create_dir(&bin).expect("mkdir bin");
            cmd.env("PATH", support::counting_path(&bin).0);
        }
        let mut child = cmd.spawn().expect("start orch supervise");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(Event::parse(line, Instant::now())).is_err() {
                    break;
                }
            }
        });
        Self {
            socket,
            dir,
            child: Some(child),
            events,
            pending: VecDeque::new(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The first event (oldest first) matching `pred`; others stay pending.
    fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Event {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i).expect("index");
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(ev) if pred(&ev) => return ev,
                Ok(ev) => self.pending.push_back(ev),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no {what} within {timeout:?}; {}", self.tail())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "orch supervise closed stdout while waiting for {what}; {}",
                        self.tail()
                    )
                }
            }
        }
    }

    /// Moves everything already printed into `pending`.
    fn drain(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            self.pending.push_back(ev);
        }
    }

    /// `agent_started` for every one of `agents`: name → pid.
    fn wait_started(&mut self, agents: usize, timeout: Duration) -> HashMap<String, u32> {
        let mut pids = HashMap::new();
        let deadline = Instant::now() + timeout;
        while pids.len() < agents {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = self.wait_for("agent_started for every agent", left, |e| {
                e.kind == "agent_started"
            });
            let agent = ev.agent.clone().expect("agent_started names its agent");
            pids.insert(agent, ev.pid.expect("agent_started has a pid"));
        }
        pids
    }

    fn tail(&self) -> String {
        let err =
            std::fs::read_to_string(self.dir.path().join("supervise.stderr")).unwrap_or_default();
        let pending: Vec<&str> = self
            .pending
            .iter()
            .rev()
            .take(10)
            .map(|e| e.raw.as_str())
            .collect();
        format!(
            "last events (newest first): {pending:#?}\nsupervise stderr:\n{}",
            err.lines().rev().take(20).collect::<Vec<_>>().join("\n")
        )
    }

    /// SIGTERM and wait; the exit status and how long it took.
    fn stop(&mut self) -> Option<(ExitStatus, Duration)> {
        let mut child = self.child.take()?;
        let start = Instant::now();
        signal(child.id(), Signal::TERM);
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(status)) = child.try_wait() {
                return Some((status, start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill();
        let status = child.wait().expect("wait");
        Some((status, start.elapsed()))
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("cleaning up after a failure; {}", self.tail());
        }
        let _ = self.stop();
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let uid = rustix::process::getuid().as_raw();
        let _ = std::fs::remove_file(format!("/tmp/tmux-{uid}/{}", self.socket));
    }
}

fn signal(pid: u32, sig: Signal) {
    let pid = Pid::from_raw(i32::try_from(pid).expect("pid fits i32")).expect("pid > 0");
    let _ = kill_process(pid, sig);
}

fn tmux_calls(sup: &Supervisor) -> usize {
    std::fs::read_to_string(sup.dir.path().join("bin/tmux-calls.log"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn layout(agents: usize, restart: bool) -> String {
    let mut yaml = String::from("session: bench\n");
    if restart {
        // Room for every kill of the run inside `window`, and min_uptime well under the
        // pause between kills, so each restart is immediate.
        yaml.push_str(
            "defaults:\n  restart: { policy: always, max_restarts: 100000, window: 1s, \
             min_uptime: 1ms, backoff: { initial: 1ms, max: 1ms } }\n",
        );
    }
    yaml.push_str("agents:\n");
    let lines = support::env_num("ORCH_BENCH_HISTORY_LINES", 0);
    let print = if lines > 0 {
        format!("seq 1 {lines}; ")
    } else {
        String::new()
    };
    for i in 0..agents {
        yaml.push_str(&format!(
            "  - {{ name: a{i}, role: WORKER, command: '{print}exec sleep 3600' }}\n"
        ));
    }
    yaml
}

/// Fields after the `(comm)` of /proc/<pid>/stat: [0] is the state.
fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// (utime+stime, cutime+cstime) in clock ticks.
fn cpu_ticks(pid: u32) -> (u64, u64) {
    let f = proc_stat(pid).expect("process alive");
    let n = |i: usize| -> u64 { f[i].parse().expect("number") };
    // stat fields 14..17 (1-based) are utime stime cutime cstime; here 0 is field 3.
    (n(11) + n(12), n(13) + n(14))
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `pid` exists, is not a zombie, and runs `comm`.
fn runs(pid: u32, comm: &str) -> bool {
    let alive = proc_stat(pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z" && s != "X"));
    alive
        && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
}

/// `a - b` in milliseconds, negative when `a` is earlier.
fn signed_ms(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile.
fn pct(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summary(label: &str, mut v: Vec<f64>, target: &str) {
    v.sort_by(f64::total_cmp);
    println!(
        "  {label:<44} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  min {:>7.2} ms   {target}",
        pct(&v, 0.50),
        pct(&v, 0.99),
        v[v.len() - 1],
        v[0],
    );
}

fn kill_bench() {
    let kills = support::env_num("ORCH_BENCH_KILLS", 100) as usize;
    let agents = support::env_num("ORCH_BENCH_KILL_AGENTS", 9).max(1) as usize;
    if kills == 0 {
        return;
    }
    let mut sup = Supervisor::start("kill", &layout(agents, true), false);
    let mut pids = sup.wait_started(agents, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));

    let mut detect_ts = Vec::new();
    let mut detect_read = Vec::new();
    let mut det_to_restart = Vec::new();
    let mut kill_to_restart_read = Vec::new();
    let mut kill_to_running = Vec::new();
    let mut exit_pid_mismatch = 0;
    for k in 0..kills {
        let name = format!("a{}", k % agents);
        let pid = pids[&name];
        assert!(
            runs(pid, "sleep"),
            "{name}'s pid {pid} is not running sleep before the kill"
        );
        let wall = SystemTime::now();
        let t0 = Instant::now();
        signal(pid, Signal::KILL);
        let exited = sup.wait_for(
            &format!("agent_exited for {name}"),
            Duration::from_secs(5),
            |e| e.is("agent_exited", &name),
        );
        if exited.pid.is_some_and(|p| p != pid) {
            exit_pid_mismatch += 1;
        }
        let restarted = sup.wait_for(
            &format!("agent_restarted for {name}"),
            Duration::from_secs(5),
            |e| e.is("agent_restarted", &name),
        );
        let new_pid = restarted.pid.expect("agent_restarted has a pid");
        let poll_end = Instant::now() + Duration::from_secs(5);
        while !runs(new_pid, "sleep") {
            assert!(
                Instant::now() < poll_end,
                "{name}'s new pid {new_pid} never ran sleep"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        kill_to_running.push(ms(t0.elapsed()));
        detect_ts.push(signed_ms(exited.ts(), wall));
        detect_read.push(ms(exited.read_at - t0));
        det_to_restart.push(signed_ms(restarted.ts(), exited.ts()));
        kill_to_restart_read.push(ms(restarted.read_at - t0));
        pids.insert(name, new_pid);
        // Longer than min_uptime, so the next restart of this agent is immediate too.
        std::thread::sleep(Duration::from_millis(30));
    }
    sup.drain();
    let mut others: BTreeMap<String, usize> = BTreeMap::new();
    for e in &sup.pending {
        *others.entry(e.kind.clone()).or_default() += 1;
    }

    println!(
        "kill -9 of an agent's pane process, {kills} kills over {agents} agents in turn, \
         30 ms pause after each restart"
    );
    summary(
        "kill → agent_exited.ts (1 ms ts resolution)",
        detect_ts,
        "target p50 ≤ 20 ms, p99 ≤ 100 ms",
    );
    summary("kill → agent_exited line read on stdout", detect_read, "");
    summary(
        "agent_exited.ts → agent_restarted.ts",
        det_to_restart,
        "target ≤ 300 ms",
    );
    summary("kill → agent_restarted line read", kill_to_restart_read, "");
    summary(
        "kill → new pid alive and exec'd (/proc)",
        kill_to_running,
        "target ≤ 300 ms (incl. detection)",
    );
    if exit_pid_mismatch > 0 {
        println!(
            "  ODD: {exit_pid_mismatch} agent_exited events named a pid other than the one killed"
        );
    }
    println!("  other events during the run: {others:?}");

    // SIGTERM stops the supervisor and leaves the agents running.
    let (status, took) = sup.stop().expect("running");
    let live = sup
        .tmux(&["list-panes", "-a", "-F", "#{@orch_agent} #{pane_dead}"])
        .lines()
        .filter(|l| l.ends_with(" 0") && !l.starts_with(' '))
        .count();
    println!(
        "  SIGTERM: supervisor exited {status} after {:.1} ms; {live}/{agents} agent panes still alive",
        ms(took)
    );
}

fn idle_bench() {
    let secs = support::env_num("ORCH_BENCH_IDLE_SECS", 60).max(1);
    let settle = support::env_num("ORCH_BENCH_SETTLE_SECS", 5);
    let sizes: Vec<usize> = std::env::var("ORCH_BENCH_IDLE_AGENTS")
        .unwrap_or_else(|_| "9,50,200".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    if sizes.is_empty() {
        return;
    }
    println!(
        "idle supervisor, `exec sleep 3600` agents, {settle} s settle then {secs} s measured \
         (CPU resolution {:.3} % of one core)",
        100.0 / support::CLOCK_TICKS / secs as f64
    );
    for agents in sizes {
        let mut sup = Supervisor::start(&format!("idle{agents}"), &layout(agents, false), true);
        let started = Instant::now();
        sup.wait_started(agents, Duration::from_secs(60 + agents as u64 / 2));
        let up = started.elapsed();
        std::thread::sleep(Duration::from_secs(settle));
        sup.drain();
        let events_before = sup.pending.len();
        let pid = sup.pid();
        let server_pid: Option<u32> = sup
            .tmux(&["display-message", "-p", "#{pid}"])
            .trim()
            .parse()
            .ok();

        let calls0 = tmux_calls(&sup);
        let (own0, kids0) = cpu_ticks(pid);
        let srv0 = server_pid.map(|p| cpu_ticks(p).0);
        let t0 = Instant::now();
        let mut rss = Vec::new();
        for i in 1..=secs {
            let next = t0 + Duration::from_secs(i);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            rss.push(status_kib(pid, "VmRSS:") as f64 / 1024.0);
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let (own1, kids1) = cpu_ticks(pid);
        let srv1 = server_pid.map(|p| cpu_ticks(p).0);
        let calls = tmux_calls(&sup) - calls0;
        let hwm = status_kib(pid, "VmHWM:") as f64 / 1024.0;
        sup.drain();
        let idle_events: Vec<String> = sup
            .pending
            .iter()
            .skip(events_before)
            .map(|e| e.kind.clone())
            .collect();

        let pct_of = |ticks: u64| ticks as f64 / support::CLOCK_TICKS / elapsed * 100.0;
        rss.sort_by(f64::total_cmp);
        let target = if agents <= 9 {
            0.2
        } else if agents >= 200 {
            2.0
        } else {
            f64::NAN
        };
        let target = if target.is_nan() {
            String::new()
        } else {
            format!(" (target ≤ {target} %)")
        };
        println!(
            "  {agents:>3} agents: CPU {:.3} %{target}, reaped tmux clients {:.3} %, tmux server {}; \
             RSS {:.1} MiB median, {:.1} max, peak {:.1} (target ≤ 30 MiB); \
             tmux processes {:.2}/s ({calls} in {elapsed:.0} s); up in {:.0} ms; \
             events while idle: {}",
            pct_of(own1 - own0),
            pct_of(kids1 - kids0),
            match (srv0, srv1) {
                (Some(a), Some(b)) => format!("{:.3} %", pct_of(b - a)),
                _ => "?".into(),
            },
            pct(&rss, 0.5),
            rss[rss.len() - 1],
            hwm,
            calls as f64 / elapsed,
            ms(up),
            if idle_events.is_empty() {
                "none".to_owned()
            } else {
                format!("{idle_events:?}")
            },
        );
    }
}

fn main() {
    println!("orch supervise (release build, private tmux server per run)");
    kill_bench();
    idle_bench();
}
