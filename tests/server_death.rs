//! When the tmux server dies, the supervisor does not respawn agents into a new, empty
//! session: it reports the death and restores the session from its newest good snapshot
//! (`snapshot.on_server_death: restore`, the default), with the layout's real
//! environment, the processes that outlived the server stopped, and a shell's handover
//! shown rather than typed; `alert` only reports it.

mod support;

use std::time::Duration;

use support::{Supervisor, TestEnv, poll, wait_for};

fn environ(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default())
        .replace('\0', "\n")
}

const SECRET: &str = "sk-live-abcdefghijklmnopqrstuvwx1234";

#[test]
fn the_supervisor_restores_a_session_whose_server_died() {
    let env = TestEnv::new();
    let pids = env.path().join("pids");
    std::fs::create_dir_all(&pids).expect("mkdir");
    // `keeper` leaves a child that ignores the hangup a dying server sends: it outlives
    // the server unless restore stops it.
    env.write(
        "orch.yaml",
        &format!(
            "session: sd\nmonitor: {{ tick: 200ms }}\nagents:\n  - {{ name: sh1, role: WORKER, profile: shell, command: 'exec sh' }}\n  - {{ name: keeper, role: WORKER, env: {{ SECRET_TOKEN: '{SECRET}' }}, command: 'nohup sleep 600 >/dev/null 2>&1 & echo $! > {}/child; exec sleep 600' }}\n",
            pids.display()
        ),
    );
    let mut sup = Supervisor::start(&env);
    sup.expect("agent_started", Some("keeper"), Duration::from_secs(10));
    let child: u32 = wait_for("the keeper's child", Duration::from_secs(5), || {
        std::fs::read_to_string(pids.join("child"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    });
    // A task for the shell, which its handover will name.
    let out = env.orch_ok(&["send", "sh1", "echo first-task"]);
    assert!(out.contains("delivered"), "{out}");
    env.orch_ok(&["snapshot"]);

    env.kill_server();
    let died = sup.expect("server_died", None, Duration::from_secs(5));
    assert_eq!(died["agents"], serde_json::json!(["sh1", "keeper"]));
    let stale = sup.expect(
        "stale_processes_stopped",
        Some("keeper"),
        Duration::from_secs(15),
    );
    let stopped: Vec<u64> = stale["pids"]
        .as_array()
        .expect("pids")
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    assert!(stopped.contains(&u64::from(child)), "{stale}");
    assert!(
        !support::alive(child),
        "the child outlived the server and the restore"
    );
    let restored = sup.expect("restored", None, Duration::from_secs(15));
    assert_eq!(restored["session"], "sd");
    for agent in ["sh1", "keeper"] {
        sup.expect("agent_started", Some(agent), Duration::from_secs(10));
    }
    assert!(
        !sup.seen.iter().any(|e| e["kind"] == "agent_restarted"),
        "nothing was respawned into a new server: {:#?}",
        sup.seen
    );

    // The keeper runs with the layout's real secret, not the snapshot's redacted copy.
    let keeper = env.pane_of("sd", "keeper");
    let environment = wait_for("the keeper's environment", Duration::from_secs(5), || {
        let e = environ(keeper.pid);
        e.contains("ORCH_AGENT=keeper").then_some(e)
    });
    assert!(
        environment.contains(&format!("SECRET_TOKEN={SECRET}")),
        "{environment}"
    );

    // The shell was shown its handover; nothing typed it in as commands.
    let sh1 = env.pane_of("sd", "sh1");
    let screen = wait_for(
        "the handover on the shell's screen",
        Duration::from_secs(5),
        || {
            let s = env.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", &sh1.id]);
            s.contains("[orch] This session was restored").then_some(s)
        },
    );
    assert!(
        screen.contains("echo first-task"),
        "names its last task:\n{screen}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let screen = env.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", &sh1.id]);
    assert!(
        !screen.contains("not found"),
        "the handover ran as commands:\n{screen}"
    );
    let audit =
        std::fs::read_to_string(env.state.path().join("sd/audit.jsonl")).unwrap_or_default();
    assert!(
        !audit.lines().any(|l| l.contains("\"kind\":\"delivered\"")
            && l.contains("\"from\":\"orch\"")
            && l.contains("\"to\":\"sh1\"")),
        "{audit}"
    );
    // And the restored session is supervised: a death is noticed and restarted.
    let pid = env.pane_of("sd", "keeper").pid;
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill");
    sup.expect("agent_restarted", Some("keeper"), Duration::from_secs(10));
    // Its status line says what needs the human again, as before the server died.
    support::wait_for("orch's status text", Duration::from_secs(10), || {
        env.tmux(&["display-message", "-p", "-t", "=sd:", "#{E:status-right}"])
            .starts_with("orch: ")
            .then_some(())
    });
}

#[test]
fn on_server_death_alert_only_reports_and_a_restore_is_adopted() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        "session: sa\nmonitor: { tick: 200ms }\nsnapshot: { on_server_death: alert }\nagents:\n  - { name: a, role: WORKER, command: 'exec sleep 600' }\n",
    );
    let mut sup = Supervisor::start(&env);
    sup.expect("agent_started", Some("a"), Duration::from_secs(10));
    sup.expect("snapshot_written", None, Duration::from_secs(10));
    env.kill_server();
    sup.expect("server_died", None, Duration::from_secs(5));
    let alert = sup.expect("escalated", None, Duration::from_secs(5));
    assert!(
        alert["reason"]
            .as_str()
            .is_some_and(|r| r.contains("orch restore")),
        "{alert}"
    );
    // Nothing brings up a new server behind the user's back.
    assert!(
        poll(Duration::from_millis(1500), || env
            .session_exists("sa")
            .then_some(()))
        .is_none(),
        "a session was recreated"
    );
    let out = env.orch_ok(&["restore", "--no-handover"]);
    assert!(out.contains("restored"), "{out}");
    let ev = sup.expect("agent_started", Some("a"), Duration::from_secs(10));
    assert_eq!(ev["pid"], env.pane_of("sa", "a").pid, "{ev}");
}

#[test]
fn restore_says_so_while_another_restore_of_the_session_runs() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        "session: sl\nagents:\n  - { name: a, role: WORKER, command: 'exec sleep 600' }\n",
    );
    env.orch_ok(&["layout", "up"]);
    env.orch_ok(&["snapshot"]);
    env.kill_server();
    // As the supervisor holds it while it restores.
    let lock =
        orch::state::open_lock_file(&env.state.path().join("sl/restore.lock")).expect("lock");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).expect("flock");
    let out = env.orch(&["restore"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is being restored right now"), "{stderr}");
    assert!(!env.session_exists("sl"));
    drop(lock);
    env.orch_ok(&["restore", "--no-handover"]);
    assert!(env.session_exists("sl"));
}
