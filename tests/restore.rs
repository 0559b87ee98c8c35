//! `orch restore` and agent transcripts on a real tmux server.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use orch::digest::sha256_hex;
use orch::snapshot::format::{AgentSnapshot, BlobRef, FORMAT, Snapshot, WindowShape};
use orch::snapshot::restore::{document_checksum, handover_message};
use support::{TestEnv, wait_for};

use support::ORGANISATION as NAMES;

/// A state dir whose path needs quoting in a shell: spaces and both quotes.
fn awkward_state_dir(env: &TestEnv) -> PathBuf {
    let dir = env.state.path().join("st \"it's\" here");
    std::fs::create_dir_all(&dir).expect("mkdir state");
    dir
}

fn orch(env: &TestEnv, state: &Path, args: &[&str]) -> std::process::Output {
    env.orch_command(args)
        .env("ORCH_STATE_DIR", state)
        .output()
        .expect("run orch")
}

fn orch_ok(env: &TestEnv, state: &Path, args: &[&str]) -> String {
    support::succeeded(args, &orch(env, state, args))
}

/// A pane's history and screen as plain text, trailing blank lines dropped.
fn history(env: &TestEnv, pane: &str) -> String {
    let text = env.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-E", "-", "-t", pane]);
    let trimmed = text.trim_end_matches(['\n', ' ']);
    trimmed.to_owned()
}

fn agent_snapshot(name: &str, role: &str) -> AgentSnapshot {
    AgentSnapshot {
        name: name.into(),
        role: role.into(),
        pane: None,
        cwd: None,
        command: None,
        state: "running".into(),
        activity: "idle".into(),
        restarts: 0,
        exit_status: None,
        last_message: None,
        pending: Vec::new(),
        scrollback: None,
        history_bytes: None,
        history_mark: None,
        alternate: None,
    }
}

/// Writes blobs and a checksummed format-1 document under `<state>/<session>/snapshots`.
fn write_snapshot(state: &Path, mut snap: Snapshot, blobs: &[Vec<u8>]) -> Snapshot {
    let dir = state.join(&snap.session).join("snapshots");
    std::fs::create_dir_all(dir.join("blobs")).expect("mkdir snapshots");
    for b in blobs {
        std::fs::write(dir.join("blobs").join(sha256_hex(b)), b).expect("blob");
    }
    snap.checksum = document_checksum(&snap).expect("checksum");
    std::fs::write(
        dir.join(format!("{}.json", snap.id)),
        serde_json::to_vec(&snap).expect("json"),
    )
    .expect("document");
    snap
}

fn blob_ref(bytes: &[u8]) -> BlobRef {
    BlobRef {
        sha256: sha256_hex(bytes),
        bytes: bytes.len() as u64,
        lines: bytes.iter().filter(|&&b| b == b'\n').count() as u64,
    }
}

/// A snapshot document of `agents`, all of profile `profile` in its saved layout.
fn snapshot_doc(
    session: &str,
    id: &str,
    window: WindowShape,
    agents: Vec<AgentSnapshot>,
    profile: &str,
) -> Snapshot {
    let layout_agents: Vec<serde_json::Value> = agents
        .iter()
        .map(|a| {
            serde_json::json!({
                "name": a.name, "role": a.role, "profile": profile,
                "env": { "FROM_LAYOUT": format!("env of {}", a.name) }
            })
        })
        .collect();
    Snapshot {
        format: FORMAT,
        id: id.into(),
        session: session.into(),
        created: "2026-11-22T00:00:00.000Z".into(),
        reason: "manual".into(),
        layout_file: None,
        layout: serde_json::json!({
            "session": session,
            "snapshot": { "scrollback_lines": 20000 },
            "agents": layout_agents,
        }),
        window,
        agents,
        quality_gate: None,
        checksum: String::new(),
    }
}

/// A `#{window_layout}` string: tmux's checksum, then the cells.
fn with_checksum(body: &str) -> String {
    let csum = body.bytes().fold(0u16, |c, b| {
        ((c >> 1) | ((c & 1) << 15)).wrapping_add(u16::from(b))
    });
    format!("{csum:04x},{body}")
}

fn role_of(name: &str) -> String {
    format!("R_{}", name.to_uppercase())
}

fn environ(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', "\n"))
        .unwrap_or_default()
}

#[test]
fn restore_brings_back_nine_panes_of_ten_thousand_lines() {
    let env = TestEnv::new();
    let state = awkward_state_dir(&env);
    std::fs::create_dir_all(env.path().join("it's a \"dir\"")).expect("mkdir cwd");
    let mut yaml = String::from(
        "session: team\nwindow: crew\ndefaults:\n  command: 'seq 1 10000; exec sleep 600'\nsnapshot: { scrollback_lines: 20000 }\nagents:\n",
    );
    for name in NAMES {
        let cwd = if name == "boss2" {
            ", cwd: \"it's a \\\"dir\\\"\""
        } else {
            ""
        };
        yaml.push_str(&format!(
            "  - {{ name: {name}, role: {}{cwd} }}\n",
            role_of(name)
        ));
    }
    env.write("orch.yaml", &yaml);
    orch_ok(&env, &state, &["layout", "up"]);

    // Capture the original session the way a snapshot would.
    let panes = env.panes("team");
    assert_eq!(panes.len(), 9);
    for p in &panes {
        wait_for("seq to finish", Duration::from_secs(20), || {
            history(&env, &p.id).ends_with("\n10000").then_some(())
        });
    }
    let shape = env.tmux(&[
        "display-message",
        "-p",
        "-t",
        &panes[0].id,
        "#{window_name}\t#{window_width}\t#{window_height}\t#{window_layout}",
    ]);
    let f: Vec<&str> = shape.trim_end().split('\t').collect();
    let window = WindowShape {
        name: f[0].into(),
        width: f[1].parse().expect("width"),
        height: f[2].parse().expect("height"),
        layout: f[3].into(),
    };
    let mut agents = Vec::new();
    let mut blobs = Vec::new();
    let mut before = Vec::new();
    let order = env.tmux(&[
        "list-panes",
        "-t",
        &panes[0].id,
        "-F",
        "#{pane_id}\t#{@orch_agent}\t#{pane_current_path}",
    ]);
    for line in order.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let (pane, name, cwd) = (f[0], f[1], f[2]);
        let blob = std::process::Command::new("tmux")
            .args([
                "-L",
                &env.socket,
                "capture-pane",
                "-p",
                "-e",
                "-J",
                "-S",
                "-",
                "-E",
                "-",
                "-t",
                pane,
            ])
            .output()
            .expect("capture")
            .stdout;
        let mut a = agent_snapshot(name, &role_of(name));
        a.pane = Some(pane.into());
        a.cwd = Some(cwd.into());
        a.command = Some("exec sleep 600 # it's \"quoted\"; really".into());
        a.scrollback = Some(blob_ref(&blob));
        agents.push(a);
        blobs.push(blob);
        before.push((name.to_owned(), history(&env, pane), cwd.to_owned()));
    }
    assert!(
        before
            .iter()
            .any(|(_, _, cwd)| cwd.ends_with("it's a \"dir\""))
    );
    write_snapshot(
        &state,
        snapshot_doc(
            "team",
            "20261122T000000.000Z-0001",
            window.clone(),
            agents,
            "shell",
        ),
        &blobs,
    );
    // A newer snapshot that is torn: `latest` must skip it.
    std::fs::write(
        state.join("team/snapshots/20261122T000100.000Z-0002.json"),
        b"{\"format\":1,\"id\":",
    )
    .expect("torn");

    env.kill_server();
    let started = Instant::now();
    let out = orch_ok(&env, &state, &["restore", "latest", "--no-handover"]);
    let took = started.elapsed();
    eprintln!("restore of 9 x 10,000 lines: orch reported {out:?}, wall {took:?}");
    assert!(out.contains("20261122T000000.000Z-0001"), "{out}");
    let journal = std::fs::read_to_string(state.join("team/events.jsonl")).expect("journal");
    let restored: serde_json::Value = journal
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|e: &serde_json::Value| e["kind"] == "restored")
        .expect("a restored event");
    assert_eq!(restored["snapshot"], "20261122T000000.000Z-0001");
    assert!(restored["duration_ms"].as_u64().is_some());

    let after = env.panes("team");
    assert_eq!(after.len(), 9, "{after:?}");
    for p in &after {
        wait_for("the replay to finish", Duration::from_secs(20), || {
            history(&env, &p.id).ends_with("\n10000").then_some(())
        });
    }
    eprintln!(
        "every pane replayed {:?} after restore began",
        started.elapsed()
    );
    for (name, text, cwd) in &before {
        let p = env.pane_of("team", name);
        assert!(!p.dead, "{name} is dead");
        assert_eq!(p.role, role_of(name));
        assert_eq!(p.title, *name);
        let restored = wait_for("the replay to finish", Duration::from_secs(20), || {
            let h = history(&env, &p.id);
            h.ends_with("\n10000").then_some(h)
        });
        let (want, got): (Vec<&str>, Vec<&str>) =
            (text.lines().collect(), restored.lines().collect());
        assert_eq!(want.len(), got.len(), "{name}: line count");
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert_eq!(w, g, "{name}: line {i} differs");
        }
        let now_cwd = env.tmux(&["display-message", "-p", "-t", &p.id, "#{pane_current_path}"]);
        assert_eq!(now_cwd.trim_end(), cwd, "{name}: cwd");
        // Polled: while the pane's shell execs the agent, its environ reads empty.
        let vars = wait_for("the pane's environment", Duration::from_secs(5), || {
            let vars = environ(p.pid);
            vars.contains(&format!("ORCH_AGENT={name}\n"))
                .then_some(vars)
        });
        assert!(vars.contains("ORCH_SESSION=team\n"), "{vars}");
        assert!(
            vars.contains(&format!("FROM_LAYOUT=env of {name}\n")),
            "{vars}"
        );
    }
    let now = env.tmux(&[
        "display-message",
        "-p",
        "-t",
        "=team:crew",
        "#{window_width}x#{window_height} #{window_layout}",
    ]);
    assert_eq!(
        now.trim_end(),
        format!("{}x{} {}", window.width, window.height, window.layout)
    );
    let limit = env.tmux(&[
        "display-message",
        "-p",
        "-t",
        &after[0].id,
        "#{history_limit}",
    ]);
    assert!(
        limit.trim().parse::<u64>().expect("limit") >= 20000,
        "{limit}"
    );
}

/// A one-agent layout and a matching snapshot of it.
fn one_agent(env: &TestEnv, state: &Path, command: &str, last_message: Option<&str>) -> Snapshot {
    one_agent_with(
        env,
        state,
        command,
        last_message,
        b"line one\nline two\n",
        "",
    )
}

/// [`one_agent`] with the saved history and more of the agent's layout entry (`extra`,
/// e.g. `, restart: { policy: never }`).
fn one_agent_with(
    env: &TestEnv,
    state: &Path,
    command: &str,
    last_message: Option<&str>,
    history: &[u8],
    extra: &str,
) -> Snapshot {
    env.write(
        "orch.yaml",
        &format!(
            "session: solo\nwindow: w\nagents:\n  - {{ name: a, role: R, profile: aider, command: {}{extra} }}\n",
            serde_json::to_string(command).expect("yaml string")
        ),
    );
    let history = history.to_vec();
    let mut a = agent_snapshot("a", "R");
    a.pane = Some("%0".into());
    a.cwd = Some(env.path().to_string_lossy().into_owned());
    a.command = Some(command.into());
    a.last_message = last_message.map(Into::into);
    a.scrollback = Some(blob_ref(&history));
    let window = WindowShape {
        name: "w".into(),
        width: 120,
        height: 40,
        layout: with_checksum("120x40,0,0,0"),
    };
    write_snapshot(
        state,
        // A line-based agent CLI (not a shell, which is shown its handover instead):
        // `ready> ` is its prompt.
        snapshot_doc(
            "solo",
            "20261122T000000.000Z-aaaa",
            window,
            vec![a],
            "aider",
        ),
        &[history],
    )
}

#[test]
fn restore_refuses_a_live_session_but_restores_under_another_name() {
    let env = TestEnv::new();
    let state = awkward_state_dir(&env);
    one_agent(&env, &state, "exec sleep 600", None);
    orch_ok(&env, &state, &["layout", "up"]);
    let out = orch(&env, &state, &["restore", "--no-handover"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--session") && err.contains("orch layout down"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    orch_ok(
        &env,
        &state,
        &["--session", "copy", "restore", "latest", "--no-handover"],
    );
    let p = env.pane_of("copy", "a");
    assert!(!p.dead);
    wait_for("the replay", Duration::from_secs(10), || {
        history(&env, &p.id)
            .starts_with("line one\nline two")
            .then_some(())
    });
    // Polled: while the pane's shell execs the agent, its environ reads empty for an
    // instant.
    wait_for(
        "the restored session's environment",
        Duration::from_secs(5),
        || environ(p.pid).contains("ORCH_SESSION=copy\n").then_some(()),
    );
}

#[test]
fn handover_text_arrives_byte_exact_without_escapes() {
    let env = TestEnv::new();
    let state = awkward_state_dir(&env);
    let got = env.path().join("got it's.txt");
    // The prompt tells restore the agent is ready for its handover.
    let command = format!(
        "printf 'ready> '; exec cat > '{}'",
        got.to_string_lossy().replace('\'', "'\\''")
    );
    let task = "finish the parser; then run `cargo test`\n\tcarefully\x1b[201~ and \x1b[31mred\x07";
    let snap = one_agent(&env, &state, &command, Some(task));
    orch_ok(&env, &state, &["restore", "latest"]);
    let transcript = state.join("solo/transcripts/a.log");
    let expected =
        orch::tmux::paste_safe(&handover_message(&snap, &snap.agents[0], Some(&transcript)));
    assert!(!expected.contains('\x1b') && expected.contains("[201~"));
    let want = format!("{expected}\n");
    let text = wait_for("the handover text", Duration::from_secs(10), || {
        std::fs::read_to_string(&got)
            .ok()
            .filter(|t| t.len() >= want.len())
    });
    assert_eq!(text, want);
    let p = env.pane_of("solo", "a");
    let screen = env.tmux(&["capture-pane", "-p", "-J", "-t", &p.id]);
    assert!(
        screen.contains("ready> [orch] This session"),
        "the handover came after the prompt:\n{screen}"
    );
}

#[test]
fn transcripts_keep_output_across_a_respawn() {
    let env = TestEnv::new();
    let state = awkward_state_dir(&env);
    env.write(
        "orch.yaml",
        "session: tr\nwindow: w\nagents:\n  - { name: a, role: R, command: 'echo \"run of $ORCH_AGENT $$\"' }\n",
    );
    orch_ok(&env, &state, &["layout", "up"]);
    let file = state.join("tr/transcripts/a.log");
    wait_for(
        "the first run in the transcript",
        Duration::from_secs(10),
        || {
            let t = std::fs::read_to_string(&file).ok()?;
            (t.matches("run of a").count() == 1).then_some(())
        },
    );
    wait_for("the agent to exit", Duration::from_secs(10), || {
        env.pane_of("tr", "a").dead.then_some(())
    });
    orch_ok(&env, &state, &["start", "a"]);
    let t = wait_for(
        "the second run in the transcript",
        Duration::from_secs(10),
        || {
            let t = std::fs::read_to_string(&file).ok()?;
            (t.matches("run of a").count() == 2).then_some(t)
        },
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{t}");
}

/// The `.json` messages waiting in `agent`'s queue.
fn queued(state: &Path, session: &str, agent: &str) -> Vec<serde_json::Value> {
    let dir = state.join(session).join("queue").join(agent);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().into_owned());
            n.is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'))
        })
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).expect("read")).expect("message"))
        .collect()
}

#[test]
fn the_handover_waits_until_the_restarted_agent_shows_its_prompt() {
    let env = TestEnv::new();
    let state = awkward_state_dir(&env);
    let got = env.path().join("got.txt");
    // Silent for 1.5 s, then a prompt; what it is sent is echoed by the terminal after the
    // prompt and written to got.txt. The saved history ends with the OLD agent's prompt,
    // which must not pass for the new one's.
    let command = format!(
        "sleep 1.5; printf 'ready> '; exec cat > '{}'",
        got.display()
    );
    let history = b"working on it\n\x1b[32mold session\x1b[0m $ \n";
    let snap = one_agent_with(&env, &state, &command, Some("port the lexer"), history, "");
    let started = Instant::now();
    let out = orch_ok(&env, &state, &["restore", "latest"]);
    let took = started.elapsed();
    assert!(out.contains("a: handover delivered"), "{out}");
    assert!(took >= Duration::from_millis(1500), "{took:?}: {out}");
    assert!(took < Duration::from_secs(20), "{took:?}: {out}");

    let transcript = state.join("solo/transcripts/a.log");
    let expected =
        orch::tmux::paste_safe(&handover_message(&snap, &snap.agents[0], Some(&transcript)));
    let want = format!("{expected}\n");
    let text = wait_for("the handover text", Duration::from_secs(10), || {
        std::fs::read_to_string(&got)
            .ok()
            .filter(|t| t.len() >= want.len())
    });
    assert_eq!(text, want, "the handover arrives intact, once");
    let p = env.pane_of("solo", "a");
    let screen = env.tmux(&["capture-pane", "-p", "-J", "-t", &p.id]);
    let first_line = expected.lines().next().expect("a line");
    assert!(
        screen.contains(&format!("ready> {first_line}")),
        "the handover came after the prompt:\n{screen}"
    );
    assert_eq!(screen.matches("[orch] This session").count(), 1, "{screen}");
    assert!(queued(&state, "solo", "a").is_empty());
    let audit = std::fs::read_to_string(state.join("solo/audit.jsonl")).expect("audit");
    assert!(
        audit.contains("\"send\"") && audit.contains("\"delivered\"") && audit.contains("\"orch\""),
        "{audit}"
    );
}

#[test]
fn no_handover_queues_nothing() {
    let env = TestEnv::new();
    let state = awkward_state_dir(&env);
    one_agent(
        &env,
        &state,
        "printf 'ready> '; exec sleep 600",
        Some("a task"),
    );
    let out = orch_ok(&env, &state, &["restore", "latest", "--no-handover"]);
    assert!(!out.contains("handover"), "{out}");
    assert!(queued(&state, "solo", "a").is_empty());
    assert!(!state.join("solo/audit.jsonl").exists());
}

#[test]
fn a_running_supervisor_delivers_the_handover() {
    let env = TestEnv::new();
    let got = env.path().join("got.txt");
    let command = format!("sleep 1; printf 'ready> '; exec cat > '{}'", got.display());
    // The restore's own state dir is the test env's, which the supervisor uses too. The
    // saved history ends with the old agent's prompt, which the supervisor must not take
    // for the new one's.
    let snap = one_agent_with(
        &env,
        env.state.path(),
        &command,
        Some("port the lexer"),
        b"working on it\nold session $ \n",
        ", restart: { policy: never }",
    );
    env.orch_ok(&["layout", "up"]);
    let mut sup = support::Supervisor::start(&env);
    sup.expect("agent_started", Some("a"), Duration::from_secs(10));
    // The session goes, the server stays (another session keeps it): a supervisor that
    // sees its tmux server die mid-call can stop with an error, which is not this test.
    env.tmux(&["new-session", "-d", "-s", "keep", "sleep 600"]);
    env.tmux(&["kill-session", "-t", "=solo"]);
    sup.expect("agent_exited", Some("a"), Duration::from_secs(10));
    let _ = std::fs::remove_file(&got);

    // By id: the supervisor may have written newer snapshots meanwhile.
    let out = env.orch_ok(&["restore", &snap.id]);
    assert!(out.contains("the running supervisor delivers"), "{out}");
    let pending = queued(env.state.path(), "solo", "a");
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["from"], "orch");
    assert_eq!(pending[0]["priority"], "high");
    assert_eq!(pending[0]["when_ready"], true);
    assert!(
        pending[0]["after_replay"]["done"].is_string(),
        "{pending:?}"
    );

    sup.expect("message_delivered", Some("a"), Duration::from_secs(20));
    let transcript = env.state.path().join("solo/transcripts/a.log");
    let want = format!(
        "{}\n",
        orch::tmux::paste_safe(&handover_message(&snap, &snap.agents[0], Some(&transcript)))
    );
    let text = wait_for("the handover text", Duration::from_secs(10), || {
        std::fs::read_to_string(&got)
            .ok()
            .filter(|t| t.len() >= want.len())
    });
    assert_eq!(text, want);
}

#[test]
fn an_agent_that_never_looks_ready_keeps_its_handover_queued_after_the_timeout() {
    use orch::messaging::queue::{Delivery, Priority, Queue};
    use orch::snapshot::handover::{Handover, Outcome, deliver};
    let env = TestEnv::new();
    env.tmux(&[
        "new-session",
        "-d",
        "-s",
        "slow",
        "-x",
        "80",
        "-y",
        "24",
        "exec sleep 600",
    ]);
    let pane = env.tmux(&["display-message", "-p", "-t", "=slow:", "#{pane_id}"]);
    let pane = pane.trim().to_owned();
    env.tmux(&["set-option", "-p", "-t", &pane, "@orch_agent", "a"]);
    let dir = env.state.path().join("slow");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let queue = Queue::new(&dir);
    let how = Delivery {
        enter: true,
        when_ready: true,
        ready_within: None,
    };
    let message = queue
        .push_first("orch", "a", Priority::High, "handover", how, None)
        .expect("queue");
    let handover = Handover {
        agent: "a".into(),
        pane,
        message: message.clone(),
        profile: orch::monitor::activity::ActivityProfile::for_profile(
            orch::layout::Profile::Shell,
        ),
        style: orch::messaging::deliver::InputStyle::plain(),
    };
    let tmux = orch::tmux::Tmux::new(Some(env.socket.clone()));
    let started = Instant::now();
    let outcomes = deliver(
        &tmux,
        &dir,
        "slow",
        &[handover],
        Duration::from_secs(1),
        started,
    )
    .expect("deliver");
    let took = started.elapsed();
    assert!(
        matches!(&outcomes[..], [Outcome::Queued(_)]),
        "{outcomes:?}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(
        queue.contains(&message),
        "still queued for the supervisor or `orch send`"
    );
}

#[test]
fn a_restored_pane_does_not_append_its_replayed_history_to_its_transcript_again() {
    let env = TestEnv::new();
    let state = awkward_state_dir(&env);
    env.write(
        "orch.yaml",
        "session: rt\nagents:\n  - { name: a, role: R, command: 'if [ -e ran ]; then echo second-run; else touch ran; seq 1 300 | sed \"s/^/hist-/\"; echo first-run; fi; exec sleep 600' }\n",
    );
    orch_ok(&env, &state, &["layout", "up"]);
    let file = state.join("rt/transcripts/a.log");
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    wait_for(
        "the first run in the transcript",
        Duration::from_secs(10),
        || read().contains("first-run").then_some(()),
    );
    orch_ok(&env, &state, &["snapshot"]);
    env.kill_server();
    orch_ok(&env, &state, &["restore", "latest", "--no-handover"]);
    let t = wait_for(
        "the second run in the transcript",
        Duration::from_secs(10),
        || {
            let t = read();
            t.contains("second-run").then_some(t)
        },
    );
    let pane = env.pane_of("rt", "a");
    let shown = env.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", &pane.id]);
    assert!(
        shown.contains("hist-150\n"),
        "the history is replayed: {shown}"
    );
    assert_eq!(
        t.lines().filter(|l| l.trim_end() == "hist-150").count(),
        1,
        "the replay went into the transcript again:\n{t}"
    );
    assert_eq!(t.matches("first-run").count(), 1, "{t}");
}
