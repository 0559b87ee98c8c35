//! The quality gate end to end: the orch binary, real repositories in temp dirs (git's
//! global and system configuration kept out), real check commands, real tmux on the
//! test's own socket, with and without a running supervisor.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{Supervisor, TestEnv, alive, wait_for};

fn git(env: &TestEnv, args: &[&str]) -> String {
    support::git_as(env, env.path(), "tester", args)
}

/// Writes `files`, commits them as `who` with `msg`; returns the commit.
fn commit(env: &TestEnv, files: &[(&str, &str)], msg: &str, who: &str) -> String {
    for (f, text) in files {
        env.write(f, text);
        git(env, &["add", f]);
    }
    let out = support::git_command(env, env.path(), who, &["commit", "-q", "-m", msg])
        .output()
        .expect("git commit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    git(env, &["rev-parse", "HEAD"])
}

/// A repository in the test's folder (which also holds orch.yaml, ignored) with one
/// green commit.
fn repo(env: &TestEnv) -> String {
    git(env, &["init", "-q", "-b", "main"]);
    commit(
        env,
        &[
            (".gitignore", "orch.yaml\n"),
            ("src/a.txt", "fine\n"),
            ("src/b.txt", "b\n"),
        ],
        "base",
        "tester",
    )
}

/// Red while a file under src/ says BROKEN; prints which. Counts its runs in `runs`.
fn check(runs: &Path) -> String {
    format!(
        "echo run >> {}; if grep -rl BROKEN src; then exit 1; fi",
        runs.display()
    )
}

fn orch_git(env: &TestEnv, args: &[&str]) -> std::process::Output {
    env.orch_command(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("orch")
}

fn ok(env: &TestEnv, args: &[&str]) -> String {
    support::succeeded(args, &orch_git(env, args))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn sim(args: &str) -> String {
    format!("'{}' agent-sim {args}", env!("CARGO_BIN_EXE_orch"))
}

fn proposal_of(list: &serde_json::Value, kind: &str) -> serde_json::Value {
    list.as_array()
        .expect("array")
        .iter()
        .find(|p| p["kind"] == kind)
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} proposal in {list}"))
}

#[test]
fn without_a_supervisor_check_list_show_approve_and_undo() {
    let env = TestEnv::new();
    let green = repo(&env);
    let runs = env.home.path().join("runs");
    env.write(
        "orch.yaml",
        &format!(
            "session: gn\nquality: {{ check: '{}', timeout: 30s, retries: 0 }}\nrollback: {{ auto_max_risk: none }}\nagents:\n  - {{ name: w1, role: WORKER }}\n  - {{ name: w2, role: WORKER }}\n",
            check(&runs)
        ),
    );
    let out = ok(&env, &["check"]);
    assert!(out.contains("green"), "{out}");
    let one = json(&ok(&env, &["check", "--rev", "HEAD", "--json"]));
    assert_eq!(
        (one["commit"].as_str(), one["outcome"].as_str()),
        (Some(green.as_str()), Some("green"))
    );
    let culprit = commit(
        &env,
        &[("src/a.txt", "BROKEN\n")],
        "w1 breaks a\n\nOrch-Agent: w1",
        "w1",
    );
    let innocent = commit(&env, &[("src/b.txt", "b\nbetter\n")], "w2 improves b", "w2");

    let red = orch_git(&env, &["check", "--json"]);
    assert_eq!(red.status.code(), Some(1), "red is exit status 1");
    let report = json(&String::from_utf8_lossy(&red.stdout));
    assert_eq!(report["verdict"], "red");
    let b = &report["branches"][0];
    assert_eq!(b["branch"], "main");
    assert_eq!(b["check"]["outcome"], "red");
    assert_eq!(b["check"]["commit"], innocent.as_str());
    assert_eq!(b["check"]["output_tail"][0], "src/a.txt");
    assert_eq!(b["culprits"][0], culprit.as_str());

    let list = json(&ok(&env, &["rollback", "list", "--json"]));
    let revert = proposal_of(&list, "revert");
    // SPEC §4's shape.
    for key in [
        "id",
        "risk",
        "kind",
        "commits",
        "files",
        "agents",
        "status",
        "backup_ref",
    ] {
        assert!(revert.get(key).is_some(), "{key} missing in {revert}");
    }
    assert_eq!(revert["risk"], "low");
    assert_eq!(revert["status"], "pending");
    assert_eq!(revert["agents"][0], "w1");
    assert_eq!(revert["files"][0], "src/a.txt");
    let id = revert["id"].as_str().expect("id").to_owned();
    assert_eq!(
        revert["backup_ref"],
        format!("refs/orch/backup/{id}").as_str()
    );
    assert_eq!(
        git(&env, &["rev-parse", "main"]),
        innocent,
        "nothing moves unasked"
    );

    let human = ok(&env, &["rollback", "list"]);
    assert!(human.contains(&id) && human.contains("waiting"), "{human}");
    let shown = ok(&env, &["rollback", "show", &id, "--diff"]);
    assert!(shown.contains("w1 breaks a"), "{shown}");
    assert!(
        shown.contains("src/a.txt") && shown.contains("+1 -1"),
        "{shown}"
    );
    assert!(
        shown.contains("-BROKEN") && shown.contains("+fine"),
        "the diff: {shown}"
    );

    // A human turns down one repair: it never runs, the others stay.
    let restore = proposal_of(&list, "restore_files");
    let restore_id = restore["id"].as_str().expect("id");
    let out = ok(&env, &["rollback", "reject", restore_id]);
    assert!(out.contains("rejected"), "{out}");
    let again = orch_git(&env, &["rollback", "approve", restore_id]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "a rejected proposal is not approved"
    );
    assert_eq!(git(&env, &["rev-parse", "main"]), innocent);

    let approved = ok(&env, &["rollback", "approve", &id]);
    assert!(approved.contains("executed"), "{approved}");
    assert!(approved.contains("green"), "checked again: {approved}");
    assert_eq!(git(&env, &["rev-parse", "main~1"]), innocent);
    assert_eq!(git(&env, &["show", "main:src/a.txt"]), "fine");
    assert_eq!(git(&env, &["show", "main:src/b.txt"]), "b\nbetter");
    assert_eq!(
        git(&env, &["rev-parse", &format!("refs/orch/backup/{id}")]),
        innocent
    );
    // The checkout followed the branch.
    assert_eq!(
        std::fs::read_to_string(env.path().join("src/a.txt")).expect("a"),
        "fine\n"
    );
    let list = json(&ok(&env, &["rollback", "list", "--json"]));
    assert_eq!(proposal_of(&list, "revert")["status"], "executed");
    assert_eq!(proposal_of(&list, "reset")["status"], "rejected");

    let undone = ok(&env, &["rollback", "undo", &id[..4]]);
    assert!(undone.contains("undone"), "{undone}");
    assert_eq!(git(&env, &["rev-parse", "main"]), innocent);
    assert_eq!(
        std::fs::read_to_string(env.path().join("src/a.txt")).expect("a"),
        "BROKEN\n"
    );
    assert_eq!(git(&env, &["status", "--porcelain"]), "");

    let journal =
        std::fs::read_to_string(env.state.path().join("gn/events.jsonl")).expect("journal");
    for kind in [
        "check_started",
        "check_passed",
        "check_failed",
        "rollback_proposed",
        "rollback_executed",
        "rollback_undone",
    ] {
        assert!(
            journal.contains(&format!("\"kind\":\"{kind}\"")),
            "{kind} in the journal"
        );
    }
    let _ = green;
}

#[test]
fn bad_input_is_one_sentence_and_exit_status_2() {
    let env = TestEnv::new();
    repo(&env);
    let runs = env.home.path().join("runs");
    let layout = |quality: &str| {
        env.write(
            "orch.yaml",
            &format!("session: gb\n{quality}agents:\n  - {{ name: w1, role: WORKER }}\n"),
        );
    };
    let two = |args: &[&str], says: &str| {
        let out = orch_git(&env, args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "orch {args:?}: {err}");
        assert!(
            err.contains(says),
            "orch {args:?} should say {says:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    };
    layout("");
    two(&["check"], "no quality: section");
    two(&["rollback", "list"], "no quality: section");
    std::fs::create_dir_all(env.path().join("elsewhere")).expect("mkdir");
    let not_repo = tempfile::tempdir().expect("dir");
    layout(&format!(
        "quality: {{ repo: '{}', check: 'true' }}\n",
        not_repo.path().display()
    ));
    two(&["check"], "is not inside a git repository");
    layout(&format!(
        "quality: {{ check: '{}', branches: [main, nope] }}\n",
        check(&runs)
    ));
    two(&["check"], "branch nope does not exist");
    layout(&format!("quality: {{ check: '{}' }}\n", check(&runs)));
    two(&["check", "--rev", "no-such-rev"], "does not name a commit");
    two(
        &["rollback", "show", "deadbeef"],
        "no rollback proposal deadbeef",
    );
    two(
        &["rollback", "approve", "deadbeef"],
        "no rollback proposal deadbeef",
    );
    two(
        &["rollback", "reject", "deadbeef"],
        "no rollback proposal deadbeef",
    );
    two(
        &["rollback", "undo", "deadbeef"],
        "no rollback proposal deadbeef",
    );
    // Layout mistakes in the new keys name the file, line and column.
    layout(
        "quality: { check: 'true', retries: 99, identity: per-agent, branches: ['bad..name'] }\n",
    );
    let out = orch_git(&env, &["layout", "validate", "orch.yaml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("orch.yaml:2:") && err.contains("quality.retries"),
        "{err}"
    );
    assert!(err.contains("quality.branches[0]"), "{err}");
    layout("quality: { check: 'true', identity: everyone }\nrollback: { max_auto_per_day: 2 }\n");
    let out = orch_git(&env, &["layout", "validate", "orch.yaml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("orch.yaml:2:") && err.contains("per-agent"),
        "{err}"
    );
}

#[test]
fn a_commit_landing_after_the_plan_is_kept_when_the_rollback_runs() {
    let env = TestEnv::new();
    repo(&env);
    let runs = env.home.path().join("runs");
    env.write(
        "orch.yaml",
        &format!(
            "session: gc\nquality: {{ check: '{}', timeout: 30s, retries: 0 }}\nrollback: {{ auto_max_risk: none }}\nagents:\n  - {{ name: w1, role: WORKER }}\n",
            check(&runs)
        ),
    );
    ok(&env, &["check"]);
    commit(&env, &[("src/a.txt", "BROKEN\n")], "break", "w1");
    assert_eq!(orch_git(&env, &["check"]).status.code(), Some(1));
    let list = json(&ok(&env, &["rollback", "list", "--json"]));
    let revert = proposal_of(&list, "revert");
    let planned_for = revert["tip"].as_str().expect("tip").to_owned();
    // An agent commits after the plan was made.
    let late = commit(&env, &[("src/c.txt", "late work\n")], "late", "w2");
    let id = revert["id"].as_str().expect("id");
    let out = ok(&env, &["rollback", "approve", id]);
    assert!(out.contains("made again"), "{out}");
    assert_eq!(
        git(&env, &["rev-parse", "main~1"]),
        late,
        "the late commit is intact"
    );
    assert_eq!(git(&env, &["show", "main:src/c.txt"]), "late work");
    assert_eq!(git(&env, &["show", "main:src/a.txt"]), "fine");
    assert_eq!(
        git(&env, &["rev-parse", &format!("refs/orch/backup/{id}")]),
        late
    );
    assert_ne!(planned_for, late);
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
                && alive(*pid)
        })
        .collect()
}

#[test]
fn a_hanging_check_is_killed_at_its_timeout_and_leaves_no_process() {
    let env = TestEnv::new();
    repo(&env);
    let pidfile = env.home.path().join("bg.pid");
    // A unique marker in the sleeps' arguments, to look for leftovers.
    let marker = format!("29{}.5", std::process::id() % 1000);
    env.write(
        "orch.yaml",
        &format!(
            "session: gh\nquality: {{ check: 'sleep {marker} & echo $! > {}; sleep {marker}', timeout: 1s, retries: 0 }}\nagents:\n  - {{ name: w1, role: WORKER }}\n",
            pidfile.display()
        ),
    );
    let started = Instant::now();
    let out = orch_git(&env, &["check", "--json"]);
    assert_eq!(out.status.code(), Some(1), "a timeout is red");
    assert!(started.elapsed() < Duration::from_secs(20), "never a hang");
    let report = json(&String::from_utf8_lossy(&out.stdout));
    let c = &report["branches"][0]["check"];
    assert_eq!(c["timed_out"], true);
    assert_eq!(c["reason"], "timed out after 1s");
    let bg: u32 = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    assert!(!alive(bg), "the check's background child died with it");
    assert_eq!(
        processes_with(&marker),
        Vec::<u32>::new(),
        "nothing left behind"
    );
}

#[test]
fn panes_commit_as_their_agent_with_per_agent_identity() {
    let env = TestEnv::new();
    repo(&env);
    env.write(
        "orch.yaml",
        "session: gi\nquality: { check: 'true', identity: per-agent }\nagents:\n  - { name: w1, role: WORKER, command: 'exec sleep 600' }\n",
    );
    ok(&env, &["layout", "up"]);
    let pid = env.pane_of("gi", "w1").pid;
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let vars: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(vars.contains(&"GIT_AUTHOR_NAME=w1".to_owned()), "{vars:?}");
    assert!(vars.contains(&"GIT_COMMITTER_NAME=w1".to_owned()));
}

/// The snapshot file a `snapshot_written` event names.
fn snapshot_doc(ev: &serde_json::Value) -> serde_json::Value {
    let path = PathBuf::from(ev["path"].as_str().expect("path"));
    json(&std::fs::read_to_string(path).expect("snapshot"))
}

#[test]
fn with_a_supervisor_a_bad_commit_is_reverted_and_the_culprit_agent_told() {
    let env = TestEnv::new();
    repo(&env);
    let runs = env.home.path().join("runs");
    let agent = sim("--profile codex --work-every 500ms --idle-after 1s");
    env.write(
        "orch.yaml",
        &format!(
            "session: gs\nmonitor: {{ tick: 200ms }}\nsnapshot: {{ interval: 1h }}\nquality: {{ check: '{}', timeout: 30s, retries: 0 }}\nrollback: {{ auto_max_risk: low }}\nagents:\n  - {{ name: w1, role: WORKER, profile: codex, command: \"{agent}\" }}\n  - {{ name: w2, role: WORKER, profile: codex, command: \"{agent}\" }}\n",
            check(&runs)
        ),
    );
    let mut sup = Supervisor::start_with(&env, &[("GIT_CONFIG_NOSYSTEM", "1")]);
    sup.expect("agent_started", Some("w1"), Duration::from_secs(10));
    sup.expect("check_passed", None, Duration::from_secs(20));

    let bad = commit(
        &env,
        &[("src/a.txt", "BROKEN\n")],
        "w1 breaks a\n\nOrch-Agent: w1",
        "w1",
    );
    let started = sup.expect("check_started", None, Duration::from_secs(10));
    assert_eq!(
        started["commit"],
        bad.as_str(),
        "noticed by watching the repository"
    );
    let failed = sup.expect("check_failed", None, Duration::from_secs(20));
    assert_eq!(failed["commit"], bad.as_str());
    assert_eq!(failed["branch"], "main");
    assert_eq!(failed["output_tail"][0], "src/a.txt");
    let proposed = sup.expect("rollback_proposed", None, Duration::from_secs(10));
    assert_eq!(proposed["repair"], "revert");
    let id = proposed["id"].as_str().expect("id").to_owned();
    let snap = sup.expect("snapshot_written", None, Duration::from_secs(10));
    assert_eq!(snap["reason"], "rollback");
    let executed = sup.expect("rollback_executed", None, Duration::from_secs(30));
    assert_eq!(executed["id"], id.as_str());
    assert_eq!(executed["check"], "green");
    assert_eq!(executed["auto"], true);
    assert_eq!(git(&env, &["rev-parse", "main~1"]), bad);
    assert_eq!(git(&env, &["show", "main:src/a.txt"]), "fine");

    // The snapshot was taken before the branch moved: its gate state still has the red
    // tip and the proposal pending.
    let doc = snapshot_doc(&snap);
    let gate = &doc["quality_gate"];
    assert_eq!(gate["branches"]["main"]["tip"], bad.as_str(), "{gate}");
    let in_snapshot = gate["proposals"]
        .as_array()
        .expect("proposals")
        .iter()
        .find(|p| p["id"] == id.as_str())
        .expect("the proposal");
    assert_eq!(in_snapshot["status"], "pending");

    // The culprit was told to stop, then what happened; the other agent got a notice.
    let screen = |agent: &str| {
        let pane = env.pane_of("gs", agent).id;
        env.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", &pane])
    };
    let w1 = wait_for("the culprit's messages", Duration::from_secs(20), || {
        let s = screen("w1");
        // Received (submitted), not only pasted.
        s.contains(&format!("received: orch: rollback {id} done"))
            .then_some(s)
    });
    let stop = w1.find("received: orch: STOP").expect("the pause message");
    let done = w1
        .find(&format!("received: orch: rollback {id} done"))
        .unwrap_or_else(|| panic!("the after message:\n{w1}"));
    assert!(stop < done, "pause first:\n{w1}");
    wait_for("the notice to w2", Duration::from_secs(40), || {
        screen("w2")
            .contains("received: orch: notice: rollback")
            .then_some(())
    });

    // The commands go through the supervisor.
    let list = json(&ok(&env, &["rollback", "list", "--json"]));
    assert_eq!(proposal_of(&list, "revert")["status"], "executed");
    let again = orch_git(&env, &["rollback", "approve", &id]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    ok(&env, &["rollback", "undo", &id]);
    let undone = sup.expect("rollback_undone", None, Duration::from_secs(10));
    assert_eq!(undone["to"], bad.as_str());
    assert_eq!(git(&env, &["rev-parse", "main"]), bad);
}

#[test]
fn a_long_check_never_blocks_the_supervisor_and_dies_with_it() {
    let env = TestEnv::new();
    repo(&env);
    let pidfile = env.home.path().join("check.pid");
    env.write(
        "orch.yaml",
        &format!(
            "session: gl\nmonitor: {{ tick: 200ms }}\nsnapshot: {{ interval: 1h }}\nquality: {{ check: 'echo $$ > {}; exec sleep 600', timeout: 20m }}\ndefaults:\n  restart: {{ backoff: {{ initial: 100ms, max: 400ms }} }}\nagents:\n  - {{ name: steady, role: WORKER, command: 'exec sleep 600' }}\n",
            pidfile.display()
        ),
    );
    let mut sup = Supervisor::start_with(&env, &[("GIT_CONFIG_NOSYSTEM", "1")]);
    let first = sup.expect("agent_started", Some("steady"), Duration::from_secs(10));
    sup.expect("check_started", None, Duration::from_secs(20));
    let check_pid: u32 = wait_for("the check's pid", Duration::from_secs(10), || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    });
    assert!(alive(check_pid));
    // While the check runs, a killed agent is restarted as always.
    let old = first["pid"].as_u64().expect("pid") as u32;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(old as i32).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill");
    let restarted = sup.expect("agent_restarted", Some("steady"), Duration::from_secs(10));
    assert_ne!(restarted["pid"].as_u64(), Some(u64::from(old)));
    assert!(alive(check_pid), "the check still runs");
    assert!(
        !sup.seen
            .iter()
            .any(|e| e["kind"] == "check_passed" || e["kind"] == "check_failed")
    );
    // `orch rollback list` is answered at once, check or no check.
    let asked = Instant::now();
    let list = json(&ok(&env, &["rollback", "list", "--json"]));
    assert_eq!(list, serde_json::json!([]));
    assert!(asked.elapsed() < Duration::from_secs(10));
    // The supervisor stops: its check goes with it.
    sup.signal(rustix::process::Signal::TERM);
    let _ = sup.child.wait();
    wait_for("the check to die", Duration::from_secs(10), || {
        (!alive(check_pid)).then_some(())
    });
    // No result was recorded (none exists yet), and certainly no red one.
    let state = std::fs::read_to_string(env.state.path().join("gl/gate.json")).unwrap_or_default();
    assert!(
        !state.contains("\"outcome\": \"red\""),
        "a killed check is no result: {state}"
    );
}

#[test]
fn a_reloaded_layout_restarts_the_gate_with_its_new_settings() {
    let env = TestEnv::new();
    repo(&env);
    let runs = env.home.path().join("runs");
    let agent = sim("--work-every 1s");
    let layout = |quality: &str| {
        format!(
            "session: gr\nmonitor: {{ tick: 200ms }}\nsnapshot: {{ interval: 1h }}\n{quality}agents:\n  - {{ name: w1, role: WORKER, command: \"{agent}\" }}\n"
        )
    };
    env.write("orch.yaml", &layout(""));
    let mut sup = Supervisor::start_with(&env, &[("GIT_CONFIG_NOSYSTEM", "1")]);
    sup.expect("agent_started", Some("w1"), Duration::from_secs(10));
    let no_gate = orch_git(&env, &["check"]);
    assert_eq!(no_gate.status.code(), Some(2), "no quality: yet");

    // `quality:` added: the gate starts and checks the branch.
    let quality = |check: &str| {
        format!(
            "quality: {{ check: '{check}', timeout: 30s, retries: 0 }}\nrollback: {{ auto_max_risk: none }}\n"
        )
    };
    env.write("orch.yaml", &layout(&quality(&check(&runs))));
    sup.expect("config_reloaded", None, Duration::from_secs(10));
    sup.expect("check_passed", None, Duration::from_secs(20));
    let bad = commit(&env, &[("src/a.txt", "BROKEN\n")], "breaks a", "tester");
    let failed = sup.expect("check_failed", None, Duration::from_secs(20));
    assert_eq!(failed["commit"], bad.as_str());

    // Another check command: the next commit is judged by it, not by the old one.
    let runs2 = env.home.path().join("runs2");
    let lenient = format!("echo run >> {}", runs2.display());
    env.write("orch.yaml", &layout(&quality(&lenient)));
    sup.expect("config_reloaded", None, Duration::from_secs(10));
    let before = std::fs::read_to_string(&runs).unwrap_or_default();
    let next = commit(&env, &[("src/b.txt", "still BROKEN a\n")], "b", "tester");
    let passed = loop {
        let ev = sup.expect("check_passed", None, Duration::from_secs(20));
        if ev["commit"] == next.as_str() {
            break ev;
        }
    };
    assert_eq!(passed["branch"], "main");
    assert!(
        std::fs::read_to_string(&runs2)
            .unwrap_or_default()
            .contains("run")
    );
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap_or_default(),
        before,
        "the old check ran again"
    );

    // `quality:` taken away: no gate any more.
    env.write("orch.yaml", &layout(""));
    sup.expect("config_reloaded", None, Duration::from_secs(10));
    wait_for("the gate to stop", Duration::from_secs(10), || {
        (orch_git(&env, &["check"]).status.code() == Some(2)).then_some(())
    });
}
