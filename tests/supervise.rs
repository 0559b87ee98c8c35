//! `orch supervise` end to end: real tmux, real processes, real signals.

mod support;

use std::time::Duration;

use support::{Supervisor, TestEnv, alive, wait_for};

const LAYOUT: &str = "session: sup
snapshot: { interval: 1s }
defaults:
  restart: { max_restarts: 3, window: 60s, min_uptime: 2s, backoff: { initial: 100ms, max: 400ms } }
agents:
  - { name: steady, role: BOSS, profile: claude, command: 'exec sleep 600' }
  - { name: other, role: WORKER, profile: claude, command: 'exec sleep 600' }
";

fn kill9(pid: u32) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill");
}

#[test]
fn a_killed_agent_is_noticed_and_restarted() {
    let env = TestEnv::new();
    env.write("orch.yaml", LAYOUT);
    let mut sup = Supervisor::start(&env);
    let started = sup.expect("agent_started", Some("steady"), Duration::from_secs(10));
    let old = started["pid"].as_u64().expect("pid") as u32;
    assert_eq!(env.pane_of("sup", "steady").pid, old);
    let other_pid = env.pane_of("sup", "other").pid;

    kill9(old);
    let exited = sup.expect("agent_exited", Some("steady"), Duration::from_secs(5));
    // tmux 3.3a sometimes never learns a pane's exit status; then orch says null, never a guess.
    assert!(
        exited["signal"] == 9 || exited["signal"].is_null(),
        "{exited}"
    );
    // Snapshotted before the respawn.
    let snap = sup.expect("snapshot_written", None, Duration::from_secs(5));
    assert_eq!(snap["reason"], "agent_exited");
    assert!(std::path::Path::new(snap["path"].as_str().expect("path")).is_file());
    let restarted = sup.expect("agent_restarted", Some("steady"), Duration::from_secs(5));
    let new = restarted["pid"].as_u64().expect("pid") as u32;
    assert_ne!(new, old);
    assert!(alive(new));
    assert_eq!(
        env.pane_of("sup", "steady").pid,
        new,
        "same pane, new process"
    );
    assert_eq!(
        env.pane_of("sup", "other").pid,
        other_pid,
        "the other agent was left alone"
    );

    // The journal has the same lines.
    let journal =
        std::fs::read_to_string(env.state.path().join("sup/events.jsonl")).expect("journal");
    assert!(
        journal
            .lines()
            .any(|l| l.contains("\"kind\":\"agent_restarted\""))
    );
    let human = env.orch_ok(&["events"]);
    assert!(
        human
            .lines()
            .any(|l| l.contains("agent_exited") && l.contains("steady")),
        "{human}"
    );
}

#[test]
fn a_crash_loop_turns_fatal_after_exactly_max_restarts() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        &LAYOUT.replace("command: 'exec sleep 600' }\n  - { name: other", "command: 'exec sleep 600' }\n  - { name: crashy, role: WORKER, command: 'echo boom; sleep 0.2; exit 3' }\n  - { name: other"),
    );
    let mut sup = Supervisor::start(&env);
    let fatal = sup.expect("agent_fatal", Some("crashy"), Duration::from_secs(20));
    assert_eq!(fatal["restarts_in_window"], 3);
    sup.expect("escalated", Some("crashy"), Duration::from_secs(1));
    let restarts = sup
        .seen
        .iter()
        .filter(|e| e["kind"] == "agent_restarted" && e["agent"] == "crashy")
        .count();
    assert_eq!(restarts, 3, "exactly max_restarts restarts");
    let exits: Vec<_> = sup
        .seen
        .iter()
        .filter(|e| e["kind"] == "agent_exited" && e["agent"] == "crashy")
        .collect();
    assert_eq!(exits.len(), 4);
    assert!(
        exits
            .iter()
            .all(|e| e["exit_status"] == 3 || e["exit_status"].is_null())
    );
    // The dead pane's screen is captured before the respawn wipes it. When the pidfd beats
    // tmux, it still shows the agent's last words; once tmux has marked the pane dead, tmux
    // 3.3a shows only its own "Pane is dead" line there.
    let screen_ok = |s: &str| s.contains("boom") || s.contains("Pane is dead");
    assert!(
        exits
            .iter()
            .all(|e| e["last_screen"].as_str().is_some_and(screen_ok)),
        "{exits:?}"
    );
    let later = sup.drain_for(Duration::from_millis(1500));
    assert!(
        !later.iter().any(|e| e["agent"] == "crashy"),
        "nothing after fatal: {later:?}"
    );

    let status: serde_json::Value =
        serde_json::from_str(&env.orch_ok(&["status", "--json"])).expect("json");
    let crashy = status["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "crashy"))
        .expect("crashy")
        .clone();
    assert_eq!(crashy["state"], "fatal");
    assert_eq!(crashy["restarts"], 3);
    assert_eq!(status["supervisor"]["running"], true);
    assert_eq!(status["supervisor"]["pid"], sup.child.id());

    // A human brings it back.
    let out = env.orch_ok(&["start", "crashy"]);
    assert_eq!(out.trim(), "crashy: start handed to the supervisor");
    sup.expect("agent_restarted", Some("crashy"), Duration::from_secs(5));
}

#[test]
fn a_restarted_supervisor_adopts_running_agents_and_keeps_counters() {
    let env = TestEnv::new();
    env.write("orch.yaml", LAYOUT);
    let mut sup = Supervisor::start(&env);
    sup.expect("agent_started", Some("other"), Duration::from_secs(10));
    let steady = env.pane_of("sup", "steady").pid;
    kill9(steady);
    sup.expect("agent_restarted", Some("steady"), Duration::from_secs(5));
    let pids: Vec<u32> = env.panes("sup").iter().map(|p| p.pid).collect();

    // A second supervisor is refused, naming the first.
    let second = env.orch(&["supervise"]);
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&format!("another supervisor (pid {})", sup.child.id())),
        "{stderr}"
    );

    sup.signal(rustix::process::Signal::KILL);
    let _ = sup.child.wait();
    drop(sup);
    let mut sup = Supervisor::start(&env);
    for agent in ["steady", "other"] {
        let ev = sup.expect("agent_started", Some(agent), Duration::from_secs(10));
        assert_eq!(ev["adopted"], true);
    }
    let later = sup.drain_for(Duration::from_millis(1500));
    assert!(
        !later
            .iter()
            .any(|e| e["kind"] == "agent_restarted" || e["kind"] == "agent_exited"),
        "{later:?}"
    );
    let now: Vec<u32> = env.panes("sup").iter().map(|p| p.pid).collect();
    assert_eq!(now, pids, "no agent was restarted");
    let status: serde_json::Value =
        serde_json::from_str(&env.orch_ok(&["status", "--json"])).expect("json");
    let restarts: Vec<u64> = status["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| a["restarts"].as_u64().unwrap_or(99))
        .collect();
    assert_eq!(
        restarts,
        [1, 0],
        "the restart counter survived the supervisor"
    );
}

#[test]
fn sigterm_stops_the_supervisor_and_leaves_agents_running() {
    let env = TestEnv::new();
    env.write("orch.yaml", LAYOUT);
    // The user's own status line, on a server that runs before orch.
    env.tmux(&["new-session", "-d", "-s", "keep", "sleep 600"]);
    env.tmux(&["set-option", "-g", "status-right", "MY-CLOCK %H"]);
    let mut sup = Supervisor::start(&env);
    sup.expect("agent_started", Some("other"), Duration::from_secs(10));
    let status = |what: &str| {
        env.tmux(&["display-message", "-p", "-t", "=sup:", what])
            .trim_end()
            .to_owned()
    };
    // orch's text goes in front of it, with room for both.
    wait_for("orch's status text", Duration::from_secs(10), || {
        (status("#{@orch_attention}").starts_with("orch: ")
            && status("#{status-right}") == "#{@orch_attention} MY-CLOCK %H")
            .then_some(())
    });
    assert_eq!(status("#{status-right-length}"), "80");
    assert_eq!(
        env.tmux(&["display-message", "-p", "-t", "=keep:", "#{status-right}"])
            .trim_end(),
        "MY-CLOCK %H",
        "another session's line is left alone"
    );
    let hooks = env.tmux(&["show-hooks", "-t", "=sup:", "pane-died"]);
    assert!(
        hooks.contains("run-shell -b") && hooks.contains("'hook' 'pane-died'"),
        "{hooks}"
    );
    let pids: Vec<u32> = env.panes("sup").iter().map(|p| p.pid).collect();
    sup.signal(rustix::process::Signal::TERM);
    sup.expect("supervisor_stopped", None, Duration::from_secs(20));
    let exit = sup.child.wait().expect("wait");
    assert!(exit.success());
    assert!(pids.iter().all(|&p| alive(p)));
    assert!(
        !env.tmux(&["show-hooks", "-t", "=sup:", "pane-died"])
            .contains("run-shell"),
        "hook removed"
    );
    assert!(!env.state.path().join("sup/control.sock").exists());
    // The user's line is given back as it was: the session has none of its own again.
    assert_eq!(status("#{status-right}"), "MY-CLOCK %H");
    assert_eq!(status("#{status-right-length}"), "40");
    let options = env.tmux(&["show-options", "-t", "=sup:"]);
    assert!(
        !options.contains("@orch_attention") && !options.contains("_before"),
        "{options}"
    );
}

#[test]
fn stop_start_restart_through_the_supervisor() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        &LAYOUT.replace("max_restarts: 3", "max_restarts: 1"),
    );
    let mut sup = Supervisor::start(&env);
    sup.expect("agent_started", Some("other"), Duration::from_secs(10));

    assert_eq!(
        env.orch_ok(&["stop", "steady"]).trim(),
        "steady: stop handed to the supervisor"
    );
    sup.expect("agent_stopped", Some("steady"), Duration::from_secs(5));
    let later = sup.drain_for(Duration::from_millis(800));
    assert!(
        !later.iter().any(|e| e["agent"] == "steady"),
        "a stopped agent stays stopped: {later:?}"
    );
    assert!(env.pane_of("sup", "steady").dead);

    env.orch_ok(&["start", "steady"]);
    sup.expect("agent_restarted", Some("steady"), Duration::from_secs(5));
    // Restarts by hand are not crashes: more of them than max_restarts never turn fatal.
    for _ in 0..3 {
        env.orch_ok(&["restart", "steady"]);
        sup.expect("agent_restarted", Some("steady"), Duration::from_secs(10));
    }
    assert!(!sup.seen.iter().any(|e| e["kind"] == "agent_fatal"));

    let out = env.orch(&["restart", "nobody"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "orch: unknown agent nobody; session sup has steady, other"
    );
}

#[test]
fn stop_and_start_without_a_supervisor() {
    let env = TestEnv::new();
    env.write("orch.yaml", LAYOUT);
    env.orch_ok(&["layout", "up"]);
    let old = env.pane_of("sup", "steady").pid;
    assert_eq!(env.orch_ok(&["stop", "steady"]).trim(), "steady: stopped");
    assert!(!alive(old));
    wait_for("the pane to be dead", Duration::from_secs(5), || {
        env.pane_of("sup", "steady").dead.then_some(())
    });
    let out = env.orch_ok(&["start", "steady"]);
    let p = env.pane_of("sup", "steady");
    assert!(!p.dead);
    assert_eq!(out.trim(), format!("steady: running (pid {})", p.pid));
    let out = env.orch_ok(&["restart", "steady"]);
    assert_ne!(env.pane_of("sup", "steady").pid, p.pid);
    assert!(out.starts_with("steady: running"));
}

#[test]
fn the_pane_died_hook_reaches_the_supervisor() {
    // The second death path: the hook orch installs runs `orch hook`, which reaches the
    // supervisor's control socket. The test runs the installed hook command itself (as
    // tmux's run-shell would): under load tmux 3.3a did not fire pane-died at all in about
    // one run of six, which is why the pidfd and reconciliation paths exist beside it.
    let env = TestEnv::new();
    // No restart: orch's own respawn could otherwise win the race against tmux noticing
    // the death, and a pane that is alive again never fires pane-died.
    let layout = LAYOUT
        .replace("session: sup\n", "session: sup\nmonitor: { tick: 1h }\n")
        .replace(
            "restart: { max_restarts",
            "restart: { policy: never, max_restarts",
        );
    env.write("orch.yaml", &layout);
    let _sup = Supervisor::start_with(&env, &[("ORCH_LOG", "orch=debug")]);
    let steady = wait_for("the agents", Duration::from_secs(10), || {
        let p = env.panes("sup");
        (p.len() == 2
            && env
                .tmux(&["show-hooks", "-t", "=sup:", "pane-died"])
                .contains("run-shell"))
        .then(|| p[0].clone())
    });
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(steady.pid as i32).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill");
    let hook = env.tmux(&["show-hooks", "-t", "=sup:", "pane-died"]);
    let quoted = hook
        .split_once("run-shell -b \"")
        .map(|(_, rest)| rest.trim_end().trim_end_matches('"'))
        .expect("run-shell -b \"…\"");
    let command = quoted
        .replace("\\\"", "\"")
        .replace("\\$", "$")
        .replace("\\\\", "\\")
        .replace("#{hook_pane}", &steady.id);
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .status()
        .expect("run the hook command");
    assert!(status.success(), "{command}");
    let log_dir = env.state.path().join("sup");
    let read_logs = || -> String {
        std::fs::read_dir(&log_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect()
    };
    let hooked = support::poll(Duration::from_secs(30), || {
        read_logs()
            .lines()
            .find(|l| l.contains("pane-died hook"))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| {
        panic!(
            "no pane-died hook in the log after 30 s\nlog:\n{}\ntmux messages:\n{}\npanes:\n{}",
            read_logs(),
            env.tmux(&["show-messages"]),
            env.tmux(&[
                "list-panes",
                "-a",
                "-F",
                "#{pane_id} #{pane_dead} #{@orch_agent}"
            ])
        )
    });
    assert!(
        hooked.contains(&format!("pane=%{}", steady.id.trim_start_matches('%'))),
        "{hooked}"
    );
}

#[test]
fn events_follow_prints_new_events_as_they_come() {
    let env = TestEnv::new();
    env.write("orch.yaml", LAYOUT);
    let mut follow = env
        .orch_command(&["events", "--follow", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn events --follow");
    let stdout = follow.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Started before any journal exists: it waits for one.
    let mut sup = Supervisor::start(&env);
    sup.expect("agent_started", Some("other"), Duration::from_secs(10));
    kill9(env.pane_of("sup", "steady").pid);
    sup.expect("agent_restarted", Some("steady"), Duration::from_secs(5));
    let mut kinds = Vec::new();
    while !kinds.iter().any(|k| k == "agent_restarted") {
        let line = rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("events --follow printed only {kinds:?}"));
        let ev: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        kinds.push(ev["kind"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("supervisor_started")
    );
    assert!(kinds.iter().any(|k| k == "agent_exited"));
    let _ = follow.kill();
    let _ = follow.wait();
}

#[test]
fn snapshots_are_written_on_the_interval() {
    let env = TestEnv::new();
    env.write("orch.yaml", LAYOUT);
    let mut sup = Supervisor::start(&env);
    // One as it starts, so later ones read only what is printed after it.
    let started = sup.expect("snapshot_written", None, Duration::from_secs(10));
    assert_eq!(started["reason"], "supervisor_started");
    let first = sup.expect("snapshot_written", None, Duration::from_secs(10));
    assert_eq!(first["reason"], "interval");
    assert!(first["duration_ms"].as_f64().is_some());
    let second = sup.expect("snapshot_written", None, Duration::from_secs(10));
    assert_ne!(first["id"], second["id"]);
    let listed = env.orch_ok(&["snapshot", "list"]);
    assert!(
        listed.contains(first["id"].as_str().expect("id")),
        "{listed}"
    );
}

#[test]
fn layout_down_stops_the_supervisor_first() {
    let env = TestEnv::new();
    env.write("orch.yaml", LAYOUT);
    let mut sup = Supervisor::start(&env);
    sup.expect("agent_started", Some("other"), Duration::from_secs(10));
    let pids: Vec<u32> = env.panes("sup").iter().map(|p| p.pid).collect();
    let out = env.orch_ok(&["layout", "down", "--grace", "2s"]);
    assert!(
        out.contains(&format!("supervisor (pid {}) stopped", sup.child.id())),
        "{out}"
    );
    assert!(
        out.trim_end().ends_with("session sup stopped (2 panes)"),
        "{out}"
    );
    let status = sup.child.wait().expect("wait");
    assert!(status.success(), "the supervisor left cleanly");
    assert!(
        !env.session_exists("sup"),
        "nothing brought the session back"
    );
    assert!(pids.iter().all(|&p| !alive(p)));
    let later = sup.drain_for(Duration::from_millis(300));
    assert!(
        !later.iter().any(|e| e["kind"] == "agent_restarted"),
        "{later:?}"
    );
    let snap = sup
        .seen
        .iter()
        .chain(later.iter())
        .find(|e| e["kind"] == "supervisor_stopped");
    assert!(snap.is_some(), "{:?}", sup.seen);
}

#[test]
fn interval_snapshots_capture_only_panes_that_printed() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        "session: rs\nsnapshot: { interval: 1s }\nagents:\n  - { name: quiet, role: BOSS, command: 'exec sleep 600' }\n  - { name: talker, role: WORKER, command: 'while read l; do echo \"got $l\"; done' }\n",
    );
    let mut sup = Supervisor::start(&env);
    let first = sup.expect("snapshot_written", None, Duration::from_secs(10));
    assert_eq!(
        first["reused_panes"], 0,
        "the first one captures everything"
    );
    let second = sup.expect("snapshot_written", None, Duration::from_secs(10));
    assert_eq!(second["reused_panes"], 2, "nothing printed: {second}");
    let pane = env.pane_of("rs", "talker").id;
    env.tmux(&["send-keys", "-t", &pane, "hello", "Enter"]);
    // The next snapshot that follows the output recaptures the talker only.
    let after = wait_for(
        "a snapshot after the output",
        Duration::from_secs(10),
        || {
            let ev = sup.expect("snapshot_written", None, Duration::from_secs(5));
            (ev["reused_panes"] == 1).then_some(ev)
        },
    );
    assert_eq!(
        after["appended_panes"], 1,
        "only the talker's new rows and screen were read: {after}"
    );
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(after["path"].as_str().expect("path")).expect("doc"),
    )
    .expect("json");
    let talker = doc["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == "talker"))
        .expect("talker")
        .clone();
    let sha = talker["scrollback"]["sha256"].as_str().expect("blob");
    let blob = std::fs::read_to_string(env.state.path().join("rs/snapshots/blobs").join(sha))
        .expect("blob");
    assert!(
        blob.contains("got hello"),
        "the new output is in the snapshot: {blob}"
    );
}

#[test]
fn a_failing_pane_listing_does_not_stop_the_supervisor() {
    let env = TestEnv::new();
    env.write("orch.yaml", LAYOUT);
    // A `tmux` first on PATH whose `list-panes -a` fails while FLAG exists, as a server
    // on its way out can.
    let flag = env.path().join("FLAG");
    let path = support::tmux_wrapper(
        &env.path().join("bin"),
        &format!(
            "case \" $* \" in *' list-panes -a '*) if [ -e '{}' ]; then echo 'server exited unexpectedly' >&2; exit 1; fi;; esac",
            flag.display()
        ),
    );
    let mut sup = Supervisor::start_with(&env, &[("PATH", &path)]);
    sup.expect("agent_started", Some("other"), Duration::from_secs(10));
    std::fs::write(&flag, b"").expect("flag");
    // Several reconciliation ticks fail.
    let during = sup.drain_for(Duration::from_millis(2500));
    std::fs::remove_file(&flag).expect("unflag");
    let pid = env.pane_of("sup", "other").pid;
    kill9(pid);
    sup.expect("agent_restarted", Some("other"), Duration::from_secs(10));
    assert!(
        !during.iter().any(|e| e["kind"] == "supervisor_stopped"),
        "{during:?}"
    );
}

#[test]
fn an_adopted_agent_that_dies_reports_its_exit_status_and_real_uptime() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        "session: ad\nagents:\n  - { name: quits, role: WORKER, restart: { policy: never }, command: 'sleep 3; exit 3' }\n  - { name: killed, role: WORKER, restart: { policy: never }, command: 'exec sleep 600' }\n",
    );
    let mut sup = Supervisor::start(&env);
    sup.expect("agent_started", Some("killed"), Duration::from_secs(10));
    let started = std::time::Instant::now();
    sup.signal(rustix::process::Signal::KILL);
    let _ = sup.child.wait();
    drop(sup);
    std::thread::sleep(Duration::from_millis(1200));
    let mut sup = Supervisor::start(&env);
    for agent in ["quits", "killed"] {
        let ev = sup.expect("agent_started", Some(agent), Duration::from_secs(10));
        assert_eq!(ev["adopted"], true);
    }
    kill9(env.pane_of("ad", "killed").pid);
    let killed = sup.expect("agent_exited", Some("killed"), Duration::from_secs(5));
    assert_eq!(killed["exit_status"], 137, "{killed}");
    let quits = sup.expect("agent_exited", Some("quits"), Duration::from_secs(10));
    assert_eq!(quits["exit_status"], 3, "{quits}");
    // Its uptime counts from its own start, before this supervisor adopted it.
    let uptime = quits["uptime_secs"].as_f64().expect("uptime");
    let lived = started.elapsed().as_secs_f64();
    assert!(
        uptime > 2.5 && uptime <= lived + 0.5,
        "uptime {uptime}, lived {lived}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&env.orch_ok(&["status", "--json"])).expect("json");
    let exits: Vec<serde_json::Value> = status["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| a["exit_status"].clone())
        .collect();
    assert_eq!(exits, [serde_json::json!(3), serde_json::json!(137)]);
}

/// Two agents that wait for `go`, then print 216 KB; `live` then sleeps, `dying` exits 3.
/// Each run adds a line to `<agent>.runs` once it has printed.
const FLOODING: &str = "session: flood
defaults:
  restart: { max_restarts: 2, window: 60s, min_uptime: 5s, backoff: { initial: 100ms, max: 200ms } }
  command: 'while [ ! -e go ]; do sleep 0.02; done; i=0; while [ $i -lt 300 ]; do printf %0720d\\\\n 0; i=$((i+1)); done; echo run >> $ORCH_AGENT.runs; if [ $ORCH_AGENT = live ]; then exec sleep 600; fi; exit 3'
agents:
  - { name: live, role: WORKER }
  - { name: dying, role: WORKER }
";

/// A control client attached to `session`, whose stdin stays open. `lagging`: it never
/// reads what tmux sends it (as a `tmux -CC` terminal that is busy, or a supervisor
/// starved of CPU), so tmux keeps the panes' output queued for it; else it reads all.
fn control_client(env: &TestEnv, session: &str, lagging: bool) -> std::process::Child {
    let before = control_clients(env);
    let child = std::process::Command::new("tmux")
        .args(["-L", &env.socket, "-C", "attach-session", "-t"])
        .arg(format!("={session}"))
        .stdin(std::process::Stdio::piped())
        .stdout(if lagging {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tmux -C");
    wait_for("the control client", Duration::from_secs(10), || {
        (control_clients(env) > before).then_some(())
    });
    child
}

fn control_clients(env: &TestEnv) -> usize {
    env.tmux(&["list-clients", "-F", "#{client_control_mode}"])
        .lines()
        .filter(|l| *l == "1")
        .count()
}

fn runs(env: &TestEnv, agent: &str) -> usize {
    std::fs::read_to_string(env.path().join(format!("{agent}.runs")))
        .map_or(0, |t| t.lines().count())
}

fn server_pid(env: &TestEnv) -> String {
    env.tmux(&["display-message", "-p", "#{pid}"])
        .trim()
        .to_owned()
}

/// tmux without the fix of tmux/tmux#5499 (3.3a to 3.7c at least) dies on the first output of a
/// respawned pane when a control client is behind on it: `orch restart`, `orch start`
/// and the supervisor's restarts must leave the server up.
#[test]
fn respawns_keep_the_tmux_server_up_while_a_control_client_lags() {
    let env = TestEnv::new();
    env.write("orch.yaml", FLOODING);
    env.orch_ok(&["layout", "up"]);
    let server = server_pid(&env);
    // With only a lagging client attached tmux would stop reading the panes; a second,
    // reading one keeps them flowing, as a user's terminal or the supervisor would.
    let mut clients = [
        control_client(&env, "flood", false),
        control_client(&env, "flood", true),
    ];
    env.write("go", "");
    wait_for("both floods", Duration::from_secs(20), || {
        (runs(&env, "live") == 1 && env.pane_of("flood", "dying").dead).then_some(())
    });

    env.orch_ok(&["restart", "live"]);
    env.orch_ok(&["start", "dying"]);
    wait_for("the second floods", Duration::from_secs(20), || {
        (runs(&env, "live") == 2 && runs(&env, "dying") == 2).then_some(())
    });
    // The server reads the new output before the agents write their `.runs` line.
    assert_eq!(server_pid(&env), server, "the tmux server died");
    assert!(!env.pane_of("flood", "live").dead);

    // The supervisor's own restarts of a crashing agent, the lagging client still there.
    let mut sup = Supervisor::start(&env);
    env.orch_ok(&["start", "dying"]);
    sup.expect("agent_fatal", Some("dying"), Duration::from_secs(30));
    assert!(runs(&env, "dying") >= 5, "{} runs", runs(&env, "dying"));
    assert_eq!(server_pid(&env), server, "the tmux server died");
    assert!(
        !sup.seen.iter().any(|e| e["kind"] == "server_died"),
        "{:#?}",
        sup.seen
    );
    for client in &mut clients {
        let _ = client.kill();
        let _ = client.wait();
    }
}

/// While its session is gone (the server kept by another), the supervisor starts no
/// control client tick after tick: tmux 3.3a can crash when one attaches while it sends
/// notifications (tmux/tmux#4980). It attaches again once the session is back.
#[test]
fn no_control_client_is_started_for_a_session_that_is_not_there() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        "session: gone\nmonitor: { tick: 100ms }\nagents:\n  - { name: a, role: WORKER, command: 'exec sleep 600', restart: { policy: never } }\n",
    );
    let mut sup = Supervisor::start(&env);
    sup.expect("agent_started", Some("a"), Duration::from_secs(10));
    wait_for(
        "the supervisor's control client",
        Duration::from_secs(10),
        || (control_clients(&env) == 1).then_some(()),
    );
    env.tmux(&["new-session", "-d", "-s", "keep", "sleep 600"]);
    env.tmux(&["kill-session", "-t", "=gone"]);
    sup.expect("agent_exited", Some("a"), Duration::from_secs(10));
    // Fifteen ticks without the session.
    std::thread::sleep(Duration::from_millis(1500));
    let log: String = std::fs::read_dir(env.state.path().join("gone"))
        .expect("session dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    let attempts = log.matches("tmux control client unavailable").count();
    assert_eq!(attempts, 0, "{log}");

    env.orch_ok(&["layout", "up"]);
    wait_for(
        "the control client attached again",
        Duration::from_secs(10),
        || (control_clients(&env) == 1).then_some(()),
    );
}
