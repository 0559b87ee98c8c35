//! `cargo bench --bench dashboard`: the dashboard's figures (issue 12).
//!
//! 1. Frame time: one supervisor line applied (`update`) and the whole screen built and
//!    drawn into ratatui's `TestBackend` (160×45), for 9 and for 200 agents; p50/p99.
//! 2. Agent death → its card redrawn, through the subscribe stream: a supervisor on a
//!    private tmux server, a subscription as the dashboard opens it; `kill -9` of an
//!    agent → the line saying it exited arrives → `update` → a frame drawn; p50/p99.
//! 3. Idle: the real dashboard (`orch`) in a pane of a private "viewer" tmux server, 9
//!    idle agents: its CPU (% of one core) and the frames it drew over
//!    `ORCH_BENCH_DASH_SECS` (60) seconds in which nothing happened, and its RSS.
//! 4. The same with 200 agents: RSS, and CPU while idle.
//! 5. 9 agents, the selected one printing a flood (`yes`): the dashboard's CPU and what
//!    it draws (a flood must not become a render flood).
//!
//! Knobs: `ORCH_BENCH_DASH_SECS` (60), `ORCH_BENCH_DASH_KILLS` (30).

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orch::supervisor::control::{AgentView, Line};
use orch::tui::app::{App, Input, update};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use rustix::process::{Pid, Signal, kill_process};

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn view(i: usize) -> AgentView {
    AgentView {
        name: format!("agent{i:03}"),
        role: "WORKER".into(),
        profile: "claude".into(),
        pane: Some(format!("%{i}")),
        pid: Some(1000 + i as u32),
        state: "running".into(),
        activity: "working".into(),
        cpu_percent: Some(1.5),
        rss_bytes: Some(200 << 20),
        started_at_ms: Some(1),
        output_seq: 1,
        last_line: Some("Compiling orch v0.1.0 (/work/orch)".into()),
        ..AgentView::default()
    }
}

fn frame_time(n: usize) {
    let mut app = App::new("bench", 160, 45, true);
    let agents: Vec<AgentView> = (0..n).map(view).collect();
    let state = serde_json::to_string(&Line::State {
        session: "bench".into(),
        supervisor_pid: 1,
        server_down: false,
        agents: agents.clone(),
    })
    .expect("json");
    update(&mut app, Input::Line(state));
    let mut terminal = Terminal::new(TestBackend::new(160, 45)).expect("terminal");
    let mut took = Vec::new();
    for round in 0..2000u64 {
        // Each frame follows a change: an agent printed.
        let mut a = agents[(round as usize * 7) % n].clone();
        a.output_seq = round + 2;
        a.rss_bytes = Some((200 << 20) + round * 4096);
        a.last_line = Some(format!("step {round}"));
        let line = serde_json::to_string(&Line::Agent { agent: Box::new(a) }).expect("json");
        let start = Instant::now();
        update(&mut app, Input::Line(line));
        terminal
            .draw(|f| orch::tui::view::render(&app, f))
            .expect("draw");
        took.push(start.elapsed());
    }
    println!(
        "frame (update + build + draw, 160x45), {n} agents: p50 {} p99 {}",
        us(pct(took.clone(), 0.5)),
        us(pct(took, 0.99))
    );
}

fn write_layout(dir: &Path, session: &str, n: usize) {
    write_layout_with(dir, session, n, false);
}

/// `n` idle agents; with `flood`, the first one (the one the dashboard selects) prints
/// as fast as it can.
fn write_layout_with(dir: &Path, session: &str, n: usize, flood: bool) {
    let mut yaml = format!(
        "session: {session}\nmonitor: {{ tick: 1s }}\nsnapshot: {{ interval: 1h }}\n\
         defaults: {{ profile: shell, command: 'sleep 100000', restart: {{ policy: always, max_restarts: 1000, window: 1s, min_uptime: 100ms }} }}\nagents:\n"
    );
    for i in 0..n {
        let command = if flood && i == 0 {
            ", command: 'yes flooding-the-pane'"
        } else {
            ""
        };
        yaml.push_str(&format!("  - {{ name: a{i}, role: WORKER{command} }}\n"));
    }
    std::fs::write(dir.join("orch.yaml"), yaml).expect("layout");
}

fn pane_pid(server: &support::Server, session: &str, agent: &str) -> Option<u32> {
    server
        .tmux(&[
            "list-panes",
            "-s",
            "-t",
            session,
            "-F",
            "#{@orch_agent} #{pane_pid} #{pane_dead}",
        ])
        .lines()
        .find_map(|l| {
            let mut f = l.split(' ');
            (f.next() == Some(agent))
                .then(|| f.next()?.parse().ok())
                .flatten()
                .filter(|_| f.next() == Some("0"))
        })
}

fn death_to_card() {
    let kills = support::env_num("ORCH_BENCH_DASH_KILLS", 30) as usize;
    let server = support::Server::new("dash-death");
    write_layout(server.dir.path(), "dd", 9);
    server.orch_with(&["layout", "up"], &[("ORCH_NO_SUPERVISE", "")]);
    let dir = server.dir.path().join("state").join("dd");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut took = Vec::new();
    runtime.block_on(async {
        let mut lines = orch::supervisor::control::subscribe(&dir)
            .await
            .expect("subscribe")
            .expect("a supervisor");
        let mut app = App::new("dd", 160, 45, true);
        let mut terminal = Terminal::new(TestBackend::new(160, 45)).expect("terminal");
        for k in 0..kills {
            let agent = format!("a{}", k % 9);
            let pid = loop {
                if let Some(pid) = pane_pid(&server, "dd", &agent) {
                    break pid;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            // Let what came before settle, so the next lines are about this death.
            tokio::time::sleep(Duration::from_millis(300)).await;
            while let Ok(Ok(Some(line))) =
                tokio::time::timeout(Duration::from_millis(1), lines.next_line()).await
            {
                update(&mut app, Input::Line(line));
            }
            let start = Instant::now();
            kill_process(Pid::from_raw(pid as i32).expect("pid"), Signal::KILL).expect("kill");
            loop {
                let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                    .await
                    .expect("a line within 10 s")
                    .expect("read")
                    .expect("the subscription open");
                let dead = serde_json::from_str::<serde_json::Value>(&line).is_ok_and(|v| {
                    v["type"] == "agent"
                            && v["agent"]["name"] == agent.as_str()
                            // Exited, in backoff, or already restarted (a new pid).
                            && (v["agent"]["state"] != "running"
                                || v["agent"]["pid"] != serde_json::json!(pid))
                });
                update(&mut app, Input::Line(line));
                if dead {
                    terminal
                        .draw(|f| orch::tui::view::render(&app, f))
                        .expect("draw");
                    took.push(start.elapsed());
                    break;
                }
            }
        }
    });
    server.orch(&["layout", "down", "--no-snapshot"]);
    println!(
        "agent death -> card redrawn (subscribe stream, 9 agents, {kills} kills): p50 {} p99 {}",
        support::ms(pct(took.clone(), 0.5)),
        support::ms(pct(took, 0.99))
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The real dashboard in a viewer tmux server for `secs`, nothing happening (or, with
/// `flood`, the selected agent printing as fast as it can).
fn idle(n: usize, secs: u64, flood: bool) {
    let tag = if flood { "flood" } else { "idle" };
    let server = support::Server::new(&format!("dash-{tag}-{n}"));
    let session = format!("d{tag}{n}");
    write_layout_with(server.dir.path(), &session, n, flood);
    let viewer = format!("{}-viewer", server.socket);
    let state = server.dir.path().join("state");
    let status = Command::new("tmux")
        .args([
            "-L",
            &viewer,
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "160",
            "-y",
            "45",
        ])
        .arg(format!(
            "'{}' --socket {}",
            env!("CARGO_BIN_EXE_orch"),
            server.socket
        ))
        .current_dir(server.dir.path())
        .env("ORCH_STATE_DIR", &state)
        .env("TERM", "xterm-256color")
        .env_remove("TMUX")
        .env_remove("ORCH_LAYOUT")
        .env_remove("ORCH_NO_SUPERVISE")
        .status()
        .expect("tmux");
    assert!(status.success());
    let viewer_tmux = |args: &[&str]| {
        let out = Command::new("tmux")
            .args(["-L", &viewer])
            .args(args)
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let pid: u32 = viewer_tmux(&["display-message", "-p", "#{pane_pid}"])
        .trim()
        .parse()
        .expect("the dashboard's pid");
    // Up, supervised, every agent shown and settled.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !viewer_tmux(&["capture-pane", "-p"]).contains(&format!("agents ({n})")) {
        assert!(
            Instant::now() < deadline,
            "the dashboard did not show the agents"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(5));
    let rss = rss_kib(pid);
    // What it writes to its terminal meanwhile: nothing, unless it redrew something.
    let written = server.dir.path().join("written");
    viewer_tmux(&["pipe-pane", "-o", &format!("cat > '{}'", written.display())]);
    let before = support::cpu_ticks(pid);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let cpu = (support::cpu_ticks(pid) - before) as f64
        / support::CLOCK_TICKS
        / start.elapsed().as_secs_f64();
    viewer_tmux(&["pipe-pane"]);
    let bytes = std::fs::metadata(&written).map_or(0, |m| m.len());
    viewer_tmux(&["send-keys", "q"]);
    std::thread::sleep(Duration::from_millis(500));
    // Its frame count, from the session's log.
    let log_dir = state.join(&session);
    let frames = std::fs::read_dir(&log_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("orch."))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|t| {
            t.lines()
                .filter(|l| l.contains("the dashboard closed"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .last()
        .unwrap_or_default();
    let _ = Command::new("tmux")
        .args(["-L", &viewer, "kill-server"])
        .stderr(Stdio::null())
        .status();
    let uid = rustix::process::getuid().as_raw();
    let _ = std::fs::remove_file(format!("/tmp/tmux-{uid}/{viewer}"));
    server.orch(&["layout", "down", "--no-snapshot"]);
    let frames = frames
        .split_whitespace()
        .find(|w| w.starts_with("frames="))
        .unwrap_or("frames=?")
        .to_owned();
    let what = if flood {
        "one of them (selected) flooding"
    } else {
        "idle"
    };
    println!(
        "dashboard, {n} agents, {what}, {secs} s: CPU {:.3} % of a core, {bytes} bytes drawn \
         meanwhile, RSS {:.1} MiB; {frames} in its whole run (start-up included)",
        cpu * 100.0,
        rss as f64 / 1024.0
    );
}

fn main() {
    let secs = support::env_num("ORCH_BENCH_DASH_SECS", 60);
    frame_time(9);
    frame_time(200);
    death_to_card();
    idle(9, secs, false);
    idle(200, secs.min(30), false);
    idle(9, secs.min(30), true);
}
