//! What the supervisor notices beyond deaths, with the simulated agent: stalls, memory
//! leaks, error storms, activity, and edits of the layout file.

mod support;

use std::time::Duration;

use support::{Supervisor, TestEnv};

fn sim(args: &str) -> String {
    format!("'{}' agent-sim {args}", env!("CARGO_BIN_EXE_orch"))
}

#[test]
fn a_hanging_agent_is_stalled_and_recovers_when_it_prints_again() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        &format!(
            "session: st\nmonitor: {{ tick: 200ms }}\nagents:\n  - {{ name: hang, role: WORKER, stall_after: 1s, command: \"{}\" }}\n  - {{ name: busy, role: WORKER, stall_after: 1s, command: \"{}\" }}\n",
            sim("--work-every 100ms --hang-after 500ms"),
            sim("--work-every 100ms")
        ),
    );
    let mut sup = Supervisor::start(&env);
    let stalled = sup.expect("agent_stalled", Some("hang"), Duration::from_secs(10));
    assert_eq!(stalled["action"], "alert");
    assert!(
        !sup.seen
            .iter()
            .any(|e| e["kind"] == "agent_stalled" && e["agent"] == "busy")
    );
    let status: serde_json::Value =
        serde_json::from_str(&env.orch_ok(&["status", "--json"])).expect("json");
    let hang = status["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "hang"))
        .expect("hang")
        .clone();
    assert_eq!(hang["state"], "stalled");
    assert!(hang["last_output_secs_ago"].as_f64().expect("measured") >= 1.0);
    // The hung agent echoes nothing, but the terminal echoes what is typed into it: any
    // output of the pane counts as a sign of life.
    let pane = env.pane_of("st", "hang").id;
    env.tmux(&["send-keys", "-t", &pane, "hello", "Enter"]);
    sup.expect("agent_recovered", Some("hang"), Duration::from_secs(5));
}

#[test]
fn a_leaking_agent_raises_a_memory_leak_and_is_not_killed() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        &format!(
            "session: lk\nmonitor: {{ resources: 200ms, leak: {{ window: 3s, min_growth: 20% }} }}\nagents:\n  - {{ name: leaky, role: WORKER, command: \"{}\" }}\n  - {{ name: flat, role: WORKER, command: \"{}\" }}\n",
            sim("--leak-mb-per-sec 20 --leak-max-mb 400"),
            sim("")
        ),
    );
    let mut sup = Supervisor::start(&env);
    let leak = sup.expect("memory_leak", Some("leaky"), Duration::from_secs(15));
    assert!(
        leak["growth_percent"].as_f64().expect("growth") >= 20.0,
        "{leak}"
    );
    assert!(leak["r_squared"].as_f64().expect("r2") >= 0.8, "{leak}");
    let later = sup.drain_for(Duration::from_secs(1));
    assert!(
        !later.iter().any(|e| e["kind"] == "agent_exited"),
        "a suspicion kills nothing: {later:?}"
    );
    assert!(
        !sup.seen
            .iter()
            .any(|e| e["kind"] == "memory_leak" && e["agent"] == "flat")
    );
}

#[test]
fn an_error_storm_is_reported_once_per_window() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        &format!(
            "session: es\nmonitor: {{ error_patterns: ['Traceback', 'panic:'], error_storm: {{ count: 3, window: 1m }} }}\nagents:\n  - {{ name: noisy, role: WORKER, command: \"{}\" }}\n",
            sim("--work-every 1s --error-every 100ms")
        ),
    );
    let mut sup = Supervisor::start(&env);
    let storm = sup.expect("error_storm", Some("noisy"), Duration::from_secs(10));
    assert!(
        storm["sample"]
            .as_str()
            .is_some_and(|s| s.contains("Traceback") || s.contains("panic:")),
        "{storm}"
    );
    let later = sup.drain_for(Duration::from_secs(2));
    assert!(
        !later.iter().any(|e| e["kind"] == "error_storm"),
        "once per window: {later:?}"
    );
}

#[test]
fn activity_shows_an_agent_waiting_for_approval() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        &format!(
            "session: ac\nmonitor: {{ tick: 200ms }}\nagents:\n  - {{ name: asker, role: WORKER, profile: claude, command: \"{}\" }}\n",
            sim("--profile claude --work-every 200ms --prompt-after 1s")
        ),
    );
    let mut sup = Supervisor::start(&env);
    sup.expect("agent_started", Some("asker"), Duration::from_secs(10));
    let activity = || -> String {
        let status: serde_json::Value =
            serde_json::from_str(&env.orch_ok(&["status", "--json"])).expect("json");
        status["agents"][0]["activity"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    support::wait_for("working", Duration::from_secs(10), || {
        (activity() == "working").then_some(())
    });
    support::wait_for("waiting for approval", Duration::from_secs(10), || {
        (activity() == "waiting").then_some(())
    });
}

#[test]
fn layout_edits_are_applied_or_rejected_without_touching_agents() {
    let env = TestEnv::new();
    let good = "session: hr\nagents:\n  - { name: a, role: BOSS, command: 'exec sleep 600' }\n  - { name: b, role: WORKER, command: 'exec sleep 600' }\n";
    let path = env.write("orch.yaml", good);
    let mut sup = Supervisor::start(&env);
    sup.expect("agent_started", Some("b"), Duration::from_secs(10));
    let before = env.panes("hr");

    // A bad edit: rejected with file:line:col, nothing touched.
    std::fs::write(&path, "session: hr\nagents:\n  - { name: a, role: BOSS, command: 'exec sleep 600' }\n  - { name: B, role: WORKER }\n").expect("write");
    let rejected = sup.expect("config_rejected", None, Duration::from_secs(10));
    let errors = rejected["errors"].as_array().expect("errors");
    assert!(errors[0].as_str().is_some_and(|e| e.contains("orch.yaml:4:13: agents[1].name: invalid agent name \"B\"")), "{rejected}");
    assert_eq!(env.panes("hr"), before);

    // A good edit: one agent added, one removed, the third untouched.
    std::fs::write(&path, "session: hr\nagents:\n  - { name: a, role: BOSS, command: 'exec sleep 600' }\n  - { name: c, role: WORKER, command: 'exec sleep 600' }\n").expect("write");
    let reloaded = sup.expect("config_reloaded", None, Duration::from_secs(10));
    assert_eq!(reloaded["added"], serde_json::json!(["c"]));
    assert_eq!(reloaded["removed"], serde_json::json!(["b"]));
    sup.expect("agent_stopped", Some("b"), Duration::from_secs(10));
    let c = env.pane_of("hr", "c");
    assert!(!c.dead);
    let a_before = before.iter().find(|p| p.agent == "a").expect("a");
    assert_eq!(&env.pane_of("hr", "a"), a_before, "agent a untouched");
}

#[test]
fn reading_the_layout_never_reloads_it_and_status_stays_fast() {
    let env = TestEnv::new();
    let path = env.write(
        "orch.yaml",
        "session: rd\nagents:\n  - { name: a, role: WORKER, command: 'exec sleep 600' }\n",
    );
    let mut sup = Supervisor::start(&env);
    sup.expect("agent_started", Some("a"), Duration::from_secs(10));
    sup.expect("snapshot_written", None, Duration::from_secs(10));
    // Every `orch status` reads the layout, as any command run in its folder does.
    let mut times = Vec::new();
    for _ in 0..100 {
        let started = std::time::Instant::now();
        env.orch_ok(&["status", "--json"]);
        times.push(started.elapsed());
        let _ = std::fs::read(&path);
    }
    let median = |t: &[Duration]| {
        let mut t = t.to_vec();
        t.sort();
        t[t.len() / 2]
    };
    let (first, last) = (median(&times[..10]), median(&times[90..]));
    // Re-reading the file on its own reads used to pile up: 0.06 s, then 3 s per call.
    assert!(
        last < first * 3 + Duration::from_millis(100),
        "orch status slowed from {first:?} to {last:?} over 100 reads of the layout"
    );
    let events = sup.drain_for(Duration::from_millis(500));
    assert!(
        events
            .iter()
            .all(|e| e["kind"] != "config_reloaded" && e["kind"] != "config_rejected"),
        "reads reloaded the layout: {events:#?}"
    );
    // Its attributes changing is no edit either; a real edit still reloads.
    let now = std::time::SystemTime::now();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(now))
        .expect("touch");
    std::fs::write(
        &path,
        "session: rd\nagents:\n  - { name: a, role: WORKER, command: 'exec sleep 600' }\n  - { name: b, role: WORKER, command: 'exec sleep 600' }\n",
    )
    .expect("edit");
    let reloaded = sup.expect("config_reloaded", None, Duration::from_secs(10));
    assert_eq!(reloaded["added"], serde_json::json!(["b"]));
    assert_eq!(
        sup.seen
            .iter()
            .filter(|e| e["kind"] == "config_reloaded")
            .count(),
        1
    );
}
