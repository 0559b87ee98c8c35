//! `orch agent-sim` end to end: the real binary, its faults, and its screens read by the
//! activity classifier in a pane of a private tmux server.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use orch::layout::Profile;
use orch::monitor::activity::{Activity, ActivityProfile};
use support::{TestEnv, wait_for};

/// Starts `orch agent-sim ARGS` with stdout piped; stdin piped when `stdin` is set.
fn start(env: &TestEnv, args: &[&str], stdin: bool) -> Child {
    let mut all = vec!["agent-sim"];
    all.extend_from_slice(args);
    let mut cmd = env.orch_command(&all);
    cmd.env("ORCH_AGENT", "worker1")
        .env_remove("ORCH_PROFILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if stdin {
        cmd.stdin(Stdio::piped());
    }
    cmd.spawn().expect("start orch agent-sim")
}

/// Every stdout line of `child`, with the time it arrived.
fn lines_of(child: &mut Child) -> Receiver<(Instant, String)> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// Collects lines until `deadline`.
fn collect_until(rx: &Receiver<(Instant, String)>, deadline: Instant) -> Vec<(Instant, String)> {
    let mut got = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => got.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(left);
                break;
            }
        }
    }
    got
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
fn exit_after_exits_with_the_given_code() {
    let env = TestEnv::new();
    let started = Instant::now();
    let out = env.orch(&["agent-sim", "--exit-after", "300ms", "--exit-code", "7"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("exiting with code 7"), "{stdout}");
}

#[test]
fn work_lines_name_the_agent() {
    let env = TestEnv::new();
    let mut child = start(&env, &["--work-every", "50ms"], false);
    let rx = lines_of(&mut child);
    let lines = collect_until(&rx, Instant::now() + Duration::from_millis(600));
    stop(child);
    assert!(
        lines
            .iter()
            .any(|(_, l)| l.starts_with("[worker1] step 2: ")),
        "{lines:?}"
    );
}

#[test]
fn stdin_lines_are_echoed_and_eof_does_not_end_it() {
    let env = TestEnv::new();
    let mut child = start(&env, &["--work-every", "10s"], true);
    let rx = lines_of(&mut child);
    let mut stdin = child.stdin.take().expect("piped stdin");
    writeln!(stdin, "hello from the boss").expect("write stdin");
    stdin.flush().expect("flush stdin");
    wait_for("the echo", Duration::from_secs(10), || {
        rx.recv_timeout(Duration::from_millis(100))
            .ok()
            .filter(|(_, l)| l == "received: hello from the boss")
    });
    drop(stdin);
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "agent-sim ended when its stdin closed"
    );
    stop(child);
}

#[test]
fn leak_grows_resident_memory() {
    let env = TestEnv::new();
    let mut child = start(
        &env,
        &["--leak-mb-per-sec", "100", "--leak-max-mb", "300"],
        false,
    );
    let _rx = lines_of(&mut child);
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib(child.id());
    std::thread::sleep(Duration::from_millis(1500));
    let after = rss_kib(child.id());
    stop(child);
    // 100 MiB/s for 1.5 s is ~150 MiB; ask for well under half of it on a busy machine.
    assert!(
        after >= before + 60 * 1024,
        "RSS grew from {before} KiB to only {after} KiB"
    );
}

#[test]
fn leak_stops_at_its_bound() {
    let env = TestEnv::new();
    let mut child = start(
        &env,
        &["--leak-mb-per-sec", "200", "--leak-max-mb", "40"],
        false,
    );
    let _rx = lines_of(&mut child);
    std::thread::sleep(Duration::from_millis(1200));
    let rss = rss_kib(child.id());
    stop(child);
    assert!(rss < 100 * 1024, "RSS {rss} KiB went past the 40 MiB bound");
    assert!(rss >= 30 * 1024, "RSS {rss} KiB: the leak did not happen");
}

#[test]
fn error_every_prints_error_lines() {
    let env = TestEnv::new();
    let out = env.orch(&[
        "agent-sim",
        "--work-every",
        "1s",
        "--error-every",
        "100ms",
        "--exit-after",
        "1s",
        "--exit-code",
        "0",
    ]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Traceback (most recent call last): simulated error"),
        "{stdout}"
    );
    assert!(stdout.contains("panic: simulated"), "{stdout}");
}

#[test]
fn hang_after_goes_silent_but_keeps_running() {
    let env = TestEnv::new();
    let mut child = start(
        &env,
        &["--work-every", "50ms", "--hang-after", "400ms"],
        true,
    );
    let started = Instant::now();
    let rx = lines_of(&mut child);
    let mut stdin = child.stdin.take().expect("piped stdin");
    let early = collect_until(&rx, started + Duration::from_millis(300));
    assert!(early.len() >= 3, "no work before the hang: {early:?}");
    // Wait out the hang, then poke it: a hung agent does not even echo.
    std::thread::sleep(Duration::from_millis(400));
    writeln!(stdin, "are you there?").expect("write stdin");
    stdin.flush().expect("flush stdin");
    let late = collect_until(&rx, started + Duration::from_millis(1500));
    let after_hang: Vec<_> = late
        .iter()
        .filter(|(t, _)| *t > started + Duration::from_millis(700))
        .collect();
    assert!(after_hang.is_empty(), "printed while hung: {after_hang:?}");
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "hung agent exited"
    );
    stop(child);
}

/// A pane running agent-sim on a private tmux server; the guard kills only that server.
struct SimPane {
    env: TestEnv,
    pane: String,
}

impl SimPane {
    fn start(args: &str) -> Self {
        let env = TestEnv::new();
        let command = format!("'{}' agent-sim {args}", env!("CARGO_BIN_EXE_orch"));
        let out = Command::new("tmux")
            .args(["-L", &env.socket, "-f", "/dev/null", "new-session", "-d"])
            .args([
                "-s",
                "sim",
                "-x",
                "120",
                "-y",
                "40",
                "-P",
                "-F",
                "#{pane_id}",
            ])
            .arg(command)
            .env_remove("TMUX")
            .env_remove("ORCH_PROFILE")
            .stdin(Stdio::null())
            .output()
            .expect("run tmux");
        assert!(out.status.success(), "tmux new-session: {out:?}");
        let pane = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Self { env, pane }
    }

    fn screen(&self) -> String {
        self.env.tmux(&["capture-pane", "-p", "-t", &self.pane])
    }

    fn wait_for_activity(&self, profile: &ActivityProfile, want: Activity) {
        let mut last = String::new();
        let found = support::poll(Duration::from_secs(10), || {
            last = self.screen();
            (profile.classify(&last) == want).then_some(())
        });
        assert!(found.is_some(), "never {want:?}; last screen:\n{last}");
    }

    fn type_line(&self, text: &str) {
        self.env
            .tmux(&["send-keys", "-t", &self.pane, "-l", "--", text]);
        self.env.tmux(&["send-keys", "-t", &self.pane, "Enter"]);
    }
}

#[test]
fn claude_prompt_after_reads_working_then_waiting_then_working() {
    let sim = SimPane::start("--profile claude --work-every 200ms --prompt-after 1s");
    let claude = ActivityProfile::for_profile(Profile::Claude);
    sim.wait_for_activity(&claude, Activity::Working);
    sim.wait_for_activity(&claude, Activity::Waiting);
    let screen = sim.screen();
    assert!(screen.contains("Do you want to proceed?"), "{screen}");
    // Answering takes the dialog down and the agent goes back to work.
    sim.type_line("1");
    sim.wait_for_activity(&claude, Activity::Working);
    assert!(sim.screen().contains("received: 1"), "{}", sim.screen());
}

#[test]
fn codex_idle_after_reads_idle_until_a_task_arrives() {
    let sim = SimPane::start("--profile codex --work-every 200ms --idle-after 800ms");
    let codex = ActivityProfile::for_profile(Profile::Codex);
    sim.wait_for_activity(&codex, Activity::Working);
    sim.wait_for_activity(&codex, Activity::Idle);
    sim.type_line("fix the failing test");
    sim.wait_for_activity(&codex, Activity::Working);
}

#[test]
fn shell_prompt_after_reads_waiting_until_answered() {
    let sim = SimPane::start("--work-every 200ms --prompt-after 600ms");
    let shell = ActivityProfile::for_profile(Profile::Shell);
    sim.wait_for_activity(&shell, Activity::Waiting);
    sim.type_line("y");
    wait_for("the answer to be read", Duration::from_secs(10), || {
        sim.screen().contains("received: y").then_some(())
    });
    // The question is still on screen, but no longer on the cursor line.
    sim.wait_for_activity(&shell, Activity::Unknown);
}
