//! Break 11, the parts a test can pin down without timing the machine (the figures are
//! in `benches/scale.rs` and BENCHMARKS.md): `orch send all` went one agent after
//! another at six tmux processes each, deliveries held the supervisor's event loop, and
//! an idle supervisor ran `tmux list-panes -a` every second.

use std::time::{Duration, Instant};

use super::support::{Supervisor, TestEnv, poll, tmux_wrapper, wait_for, workers};

fn calls(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |t| t.lines().count())
}

/// A `tmux` first on PATH that appends a line to `log` per process: `(PATH, log)`.
fn counting(env: &TestEnv) -> (String, std::path::PathBuf) {
    let log = env.path().join("tmux-calls.log");
    let path = tmux_wrapper(
        &env.path().join("bin"),
        &format!("echo x >> '{}'", log.display()),
    );
    (path, log)
}

#[test]
fn send_all_delivers_to_forty_agents_in_a_handful_of_tmux_processes() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        &workers("session: s\n", 40, |_| {
            "stty -echo -icanon; exec tee -a /dev/null".into()
        }),
    );
    env.orch_ok(&["layout", "up"]);
    wait_for("40 panes", Duration::from_secs(20), || {
        (env.panes("s").iter().filter(|p| !p.dead).count() == 40).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let busy = env.pane_of("s", "a7").id;
    env.tmux(&["copy-mode", "-t", &busy]);
    let (path, log) = counting(&env);
    let out = env
        .orch_command(&["send", "all", "one message for the forty of you"])
        .env("PATH", &path)
        .output()
        .expect("send");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches(": delivered").count(), 39, "{text}");
    assert!(
        text.contains("a7: queued"),
        "the pane in copy mode waits: {text}"
    );
    let n = calls(&log);
    assert!(
        n <= 20,
        "{n} tmux processes for 40 agents (six each, one after another, before)"
    );
    for agent in ["a0", "a20", "a39"] {
        let pane = env.pane_of("s", agent).id;
        let screen = env.tmux(&["capture-pane", "-p", "-t", &pane]);
        assert!(
            screen.contains("one message for the forty of you"),
            "{agent}: {screen}"
        );
    }
    let verify = env.orch_ok(&["audit", "verify"]);
    assert!(verify.starts_with("ok"), "{verify}");
}

#[test]
fn an_idle_supervisor_runs_no_tmux_process() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        &workers("session: i\n", 5, |_| "exec sleep 600".into()),
    );
    let (path, log) = counting(&env);
    let mut sup = Supervisor::start_with(&env, &[("PATH", path.as_str())]);
    sup.expect("snapshot_written", None, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(2));
    let before = calls(&log);
    std::thread::sleep(Duration::from_secs(4));
    let idle = calls(&log) - before;
    assert_eq!(
        idle, 0,
        "{idle} tmux processes in 4 idle seconds (one a second before)"
    );
    // The reconciliation still works: a death is seen and the agent started again.
    let pid = env.pane_of("i", "a2").pid as i32;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill");
    sup.expect("agent_exited", Some("a2"), Duration::from_secs(5));
}

#[test]
fn a_delivery_in_progress_never_holds_up_the_supervisor() {
    let env = TestEnv::new();
    // a0 never shows what is pasted, so its delivery waits out the confirmation window
    // holding a0's queue lock.
    env.write(
        "orch.yaml",
        "session: d\nagents:\n  - { name: a0, role: WORKER, command: 'stty -echo; exec sleep 600' }\n  - { name: a1, role: WORKER, command: 'exec sleep 600' }\n",
    );
    let mut sup = Supervisor::start(&env);
    sup.expect("agent_started", Some("a1"), Duration::from_secs(10));
    sup.expect("snapshot_written", None, Duration::from_secs(10));
    let mut send = env
        .orch_command(&["send", "a0", "you will not see this"])
        .spawn()
        .expect("send");
    // The supervisor's tick finds a0's message queued while `orch send` delivers it.
    std::thread::sleep(Duration::from_millis(1200));
    let pid = env.pane_of("d", "a1").pid as i32;
    let killed = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill");
    sup.expect("agent_exited", Some("a1"), Duration::from_secs(10));
    let noticed = killed.elapsed();
    let _ = send.wait();
    assert!(
        noticed < Duration::from_millis(500),
        "the death was noticed after {noticed:?}: the loop waited for a queue lock"
    );
    let status = poll(Duration::from_secs(5), || {
        let out = env.orch(&["status", "--json"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .expect("status");
    assert!(status.contains("\"running\":true"), "{status}");
}
