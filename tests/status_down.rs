//! `orch status`, `orch layout down`, and the command line's errors, on real tmux.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::{TestEnv, alive, poll, process_tree, wait_for};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn status_json_has_the_spec_shape_and_reports_exits() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        "session: st\nagents:\n  - { name: runner, role: BOSS, command: 'exec sleep 600' }\n  - { name: quitter, role: WORKER, command: 'exit 3' }\n  - { name: victim, role: WORKER, command: 'exec sleep 600' }\n  - { name: child, role: WORKER, command: 'sleep 600 & sleep 600; wait' }\n",
    );
    env.orch_ok(&["layout", "up"]);
    let victim = env.pane_of("st", "victim");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(victim.pid as i32).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill");
    // tmux marks a pane dead when its terminal closes and records the exit status when it
    // reaps the process; tmux 3.3a sometimes never records it at all. So wait a little for
    // it, and then expect orch to report exactly what tmux knows.
    let mut tmux_knows = std::collections::HashMap::new();
    for agent in ["victim", "quitter"] {
        let id = env.pane_of("st", agent).id;
        let raw = |env: &TestEnv| {
            env.tmux(&[
                "display-message",
                "-p",
                "-t",
                &id,
                "#{pane_dead}:#{pane_dead_status}:#{pane_dead_signal}",
            ])
        };
        wait_for(
            &format!("{agent} to be dead"),
            Duration::from_secs(5),
            || raw(&env).starts_with("1:").then_some(()),
        );
        let _ = poll(Duration::from_secs(2), || {
            (raw(&env).trim().len() > 3).then_some(())
        });
        let fields: Vec<String> = raw(&env).trim().split(':').map(str::to_owned).collect();
        let expected = match (fields[1].parse::<i64>(), fields[2].parse::<i64>()) {
            (Ok(status), _) => serde_json::json!(status),
            (_, Ok(signal)) => serde_json::json!(128 + signal),
            _ => serde_json::Value::Null,
        };
        tmux_knows.insert(agent, expected);
    }
    let v = json(&env.orch_ok(&["status", "--json"]));
    assert_eq!(v["session"], "st");
    assert_eq!(
        v["supervisor"],
        serde_json::json!({"running": false, "pid": null})
    );
    let agents = v["agents"].as_array().expect("agents");
    let keys: Vec<&str> = agents[0]
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "name",
        "role",
        "pane",
        "pid",
        "state",
        "restarts",
        "exit_status",
        "cpu_percent",
        "rss_bytes",
        "activity",
        "uptime_secs",
        "last_output_secs_ago",
    ];
    let mut got = keys.clone();
    got.sort_unstable();
    expected.sort_unstable();
    assert_eq!(got, expected, "exactly SPEC §4's fields");

    let by_name = |n: &str| {
        agents
            .iter()
            .find(|a| a["name"] == n)
            .unwrap_or_else(|| panic!("agent {n}"))
    };
    let runner = by_name("runner");
    assert_eq!(runner["role"], "BOSS");
    assert_eq!(runner["state"], "running");
    assert_eq!(runner["pane"], env.pane_of("st", "runner").id.as_str());
    assert_eq!(runner["pid"], env.pane_of("st", "runner").pid);
    assert_eq!(runner["exit_status"], serde_json::Value::Null);
    assert_eq!(runner["restarts"], 0);
    assert!(runner["rss_bytes"].as_u64().expect("rss") > 0);
    assert!(runner["cpu_percent"].as_f64().is_some());
    assert!(runner["uptime_secs"].as_f64().is_some());
    assert_eq!(
        runner["activity"], "unknown",
        "activity is not measured yet and never invented"
    );
    assert_eq!(runner["last_output_secs_ago"], serde_json::Value::Null);

    let quitter = by_name("quitter");
    assert_eq!(quitter["state"], "exited");
    assert_eq!(quitter["exit_status"], tmux_knows["quitter"]);
    assert!(matches!(tmux_knows["quitter"].as_i64(), Some(3) | None));
    assert_eq!(quitter["rss_bytes"], serde_json::Value::Null);
    let victim = by_name("victim");
    assert_eq!(victim["state"], "exited");
    assert_eq!(
        victim["exit_status"], tmux_knows["victim"],
        "killed by SIGKILL reads as 128+9"
    );
    assert!(matches!(tmux_knows["victim"].as_i64(), Some(137) | None));

    // The whole tree counts: sh plus two sleeps use more memory than one sleep.
    let child = by_name("child");
    assert!(child["rss_bytes"].as_u64().expect("rss") > runner["rss_bytes"].as_u64().expect("rss"));

    let table = env.orch_ok(&["status"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("session st on tmux socket"), "{table}");
    assert!(lines[1].starts_with("AGENT "), "{table}");
    let state_col = lines[1].find("STATE").expect("STATE column");
    for line in &lines[2..] {
        let state = &line[state_col..];
        assert!(
            state.starts_with("running") || state.starts_with("exited"),
            "aligned: {table}"
        );
    }
    let quitter_line = lines
        .iter()
        .find(|l| l.starts_with("quitter"))
        .expect("quitter row");
    assert!(quitter_line.contains("exited   3"), "{quitter_line}");
}

#[test]
fn status_of_a_session_that_is_not_up_fails_with_a_hint() {
    let env = TestEnv::new();
    let out = env.orch(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "orch: session org9 is not running on tmux socket {}; start it with `orch layout up`",
            env.socket
        )
    );
}

#[test]
fn down_stops_every_agent_process_and_the_session() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        "session: dn\nagents:\n  - { name: polite, role: BOSS, profile: claude, command: 'exec sleep 600' }\n  - { name: stubborn, role: WORKER, profile: claude, command: \"trap '' TERM; sleep 600 & sleep 600; wait\" }\n  - { name: shell, role: WORKER, profile: shell, command: \"trap '' TERM; sleep 600\" }\n",
    );
    env.orch_ok(&["layout", "up"]);
    let roots: Vec<u32> = env.panes("dn").iter().map(|p| p.pid).collect();
    let pids: Vec<u32> = wait_for("every agent's processes", Duration::from_secs(10), || {
        let all: Vec<u32> = roots.iter().flat_map(|&r| process_tree(r)).collect();
        // bash execs the last command of -c, so 5: sleep, bash + 2 sleeps, sleep.
        (all.len() >= 5).then_some(all)
    });
    assert!(pids.iter().all(|&p| alive(p)));

    let out = env.orch_ok(&["layout", "down", "--grace", "1s"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("snapshot ") && lines[0].ends_with(".json"),
        "a final snapshot first: {out}"
    );
    let snapshot = lines[0].rsplit(' ').next().expect("path");
    assert!(std::path::Path::new(snapshot).is_file());
    assert_eq!(
        lines[1],
        "session dn stopped (3 panes); killed after 1s: stubborn"
    );
    let journal =
        std::fs::read_to_string(env.state.path().join("dn/events.jsonl")).expect("journal");
    assert!(
        journal.contains("\"kind\":\"snapshot_written\"")
            && journal.contains("\"reason\":\"layout_down\""),
        "{journal}"
    );
    assert!(!env.session_exists("dn"));
    for p in pids {
        assert!(!alive(p), "process {p} survived layout down");
    }
    let again = env.orch_ok(&["layout", "down"]);
    assert_eq!(
        again.trim(),
        format!(
            "session dn is not running on tmux socket {}; nothing to stop",
            env.socket
        )
    );
}

#[test]
fn tmux_missing_from_path_is_one_clear_sentence() {
    let env = TestEnv::new();
    let empty = tempfile::tempdir().expect("dir");
    for args in [&["status"][..], &["layout", "up"]] {
        let out = env
            .orch_command(args)
            .env("PATH", empty.path())
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.trim_end().ends_with("tmux was not found on PATH; install tmux 3.2 or newer (e.g. `apt-get install tmux`)"),
            "{stderr}"
        );
    }
}

#[test]
fn bad_layouts_exit_2_with_positions_and_create_nothing() {
    let env = TestEnv::new();
    env.write("bad.yaml", "session: s\nagents:\n  - { name: Bad, role: BOSS }\n  - { name: b, role: BOSS, colour: red }\n");
    let out = env.orch(&["layout", "validate", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{}:3:13: agents[0].name: invalid agent name \"Bad\"",
            env.path().join("bad.yaml").display()
        )),
        "{stderr}"
    );

    let out = env.orch(&["--layout", "bad.yaml", "layout", "up"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!env.session_exists("s"));
    assert_eq!(
        env.tmux(&["list-sessions"]),
        "",
        "no server was started for a bad layout"
    );

    env.write(
        "good.yaml",
        "session: s\nagents:\n  - { name: a, role: BOSS }\n",
    );
    assert_eq!(env.orch_ok(&["layout", "validate", "good.yaml"]), "ok\n");
    let out = env.orch(&["layout", "validate", "nope.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "nope.yaml: no such file; check the path given to --layout"
    );
    let out = env.orch(&["--session", "a.b", "status"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn layout_list_shows_builtins_and_local_layouts() {
    let env = TestEnv::new();
    env.write(
        "layouts/team.yaml",
        "session: team\nagents:\n  - { name: a, role: BOSS }\n",
    );
    env.write("layouts/broken.yaml", "session: [\n");
    let out = env.orch_ok(&["layout", "list"]);
    for name in ["org9", "org5", "org9-claude", "org9-codex"] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(name)),
            "{name} in {out}"
        );
    }
    assert!(out.contains("(default)"), "{out}");
    assert!(
        out.contains("layouts/team.yaml  session team, 1 agents"),
        "{out}"
    );
    assert!(out.contains("layouts/broken.yaml  invalid: 1 problem(s); run `orch layout validate layouts/broken.yaml`"), "{out}");
}

#[test]
fn builtin_org9_comes_up_with_the_users_shell() {
    let env = TestEnv::new();
    env.orch_ok(&["layout", "up"]);
    let panes = env.panes("org9");
    assert_eq!(panes.len(), 9);
    let out = env.orch_ok(&["layout", "down", "--grace", "3s", "--no-snapshot"]);
    assert!(
        !env.state.path().join("org9/snapshots").exists(),
        "--no-snapshot writes none"
    );
    assert_eq!(
        out.trim(),
        "session org9 stopped (9 panes)",
        "shells leave on SIGHUP without needing SIGKILL"
    );
}

#[test]
fn doctor_checks_the_environment() {
    let env = TestEnv::new();
    let out = env.orch(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for what in ["tmux", "git", "state dir", "socket", "layout"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok") && l[6..].starts_with(what)),
            "{what}: {text}"
        );
    }
    // A state dir others can read is a failure, with the fix.
    std::fs::set_permissions(env.state.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let out = env.orch(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text.contains(&format!(
            "FAIL  state dir  {} is readable by others; run `chmod 700",
            env.state.path().display()
        )),
        "{text}"
    );
}

#[test]
fn state_dir_is_private() {
    let env = TestEnv::new();
    let state = env.state.path().join("nested/state");
    let out = env
        .orch_command(&["layout", "up"])
        .env("ORCH_STATE_DIR", &state)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for dir in [state.clone(), state.join("org9")] {
        let mode = std::fs::metadata(&dir)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
    let logs: Vec<String> = std::fs::read_dir(state.join("org9"))
        .expect("session dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("orch.") && n.ends_with(".log"))
        .collect();
    assert_eq!(
        logs.len(),
        1,
        "one day's log in the session's state folder: {logs:?}"
    );
}

/// Counts tmux processes with a wrapper placed first on PATH.
fn tmux_calls_for_status(agents: usize) -> usize {
    let env = TestEnv::new();
    let yaml = support::workers("session: many\n", agents, |_| "exec sleep 600".to_owned());
    env.write("orch.yaml", &yaml);
    env.orch_ok(&["layout", "up"]);
    assert_eq!(env.panes("many").len(), agents);

    let bin = tempfile::tempdir().expect("dir");
    let log = bin.path().join("calls.log");
    let path = support::tmux_wrapper(bin.path(), &format!("echo \"$*\" >> '{}'", log.display()));
    let out = env
        .orch_command(&["status", "--json"])
        .env("PATH", path)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        json(&String::from_utf8_lossy(&out.stdout))["agents"]
            .as_array()
            .map(Vec::len),
        Some(agents)
    );
    std::fs::read_to_string(&log)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn status_runs_tmux_once_whatever_the_number_of_agents() {
    assert_eq!(tmux_calls_for_status(9), 1);
    assert_eq!(tmux_calls_for_status(50), 1);
}
