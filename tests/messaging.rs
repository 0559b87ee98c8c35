//! `orch send` and `orch audit verify` on a real (private) tmux server: hostile text
//! arrives byte-exact, priorities hold across copy mode, the ACL refuses and audits, the
//! audit chain detects a changed byte, a dead agent's messages wait in its queue.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{TestEnv, poll, wait_for};

/// A session `m` whose agents each copy their input to `<dir>/<agent>.txt` and the screen; `dead1` exits at once.
fn up(env: &TestEnv, acl: &str) -> PathBuf {
    let out = env.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    write_layout(env, acl);
    env.orch_ok(&["layout", "up"]);
    for a in ["president", "boss1", "worker1"] {
        wait_for("cat to run", Duration::from_secs(10), || {
            out.join(format!("{a}.txt")).exists().then_some(())
        });
    }
    out
}

fn write_layout(env: &TestEnv, acl: &str) {
    let out = env.path().join("out");
    // The receiver shows what it reads itself, as an agent's TUI does: with the kernel's
    // own echo (`cat` in canonical mode) the echo of a 100 KB paste can stall until the
    // next key arrives when tmux reads the pty slowly, and the paste is never seen.
    let cat = |a: &str| {
        format!(
            "stty -echo -icanon && exec tee '{}'",
            out.join(format!("{a}.txt")).display()
        )
    };
    env.write(
        "orch.yaml",
        &format!(
            "session: m\nmessaging: {{ acl: {acl} }}\nagents:\n  - {{ name: president, role: PRESIDENT, command: \"{}\" }}\n  - {{ name: boss1, role: BOSS, command: \"{}\" }}\n  - {{ name: worker1, role: WORKER, command: \"{}\" }}\n  - {{ name: dead1, role: WORKER, command: 'exit 0' }}\n",
            cat("president"),
            cat("boss1"),
            cat("worker1")
        ),
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until `file` holds exactly `expected` (and fails showing the difference).
fn expect_file(file: &Path, expected: &str) {
    let got = poll(Duration::from_secs(10), || {
        let s = read(file);
        (s == expected).then_some(s)
    });
    if got.is_none() {
        let s = read(file);
        let at = s
            .bytes()
            .zip(expected.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(s.len().min(expected.len()));
        panic!(
            "{} differs at byte {at} (len {} vs expected {}): got {:?}... expected {:?}...",
            file.display(),
            s.len(),
            expected.len(),
            &s[s.floor_char_boundary(at)..s.floor_char_boundary((at + 80).min(s.len()))],
            &expected[expected.floor_char_boundary(at)
                ..expected.floor_char_boundary((at + 80).min(expected.len()))]
        );
    }
}

fn diagnose(env: &TestEnv, pane: &str) -> String {
    let o = std::process::Command::new("tmux")
        .args(["-L", &env.socket, "capture-pane", "-p", "-J", "-t", pane])
        .output()
        .expect("tmux");
    let panes = env.tmux(&["list-panes", "-a", "-F", "#{pane_id} #{pane_dead} #{pane_in_mode} #{pane_current_command} #{pane_width}x#{pane_height} cy=#{cursor_y} hist=#{history_size} alt=#{alternate_on}"]);
    let hist = env.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", pane]);
    let hist: Vec<&str> = hist.lines().collect();
    let panes = format!(
        "{panes}\nhistory lines {}; last: {:?}\nfile {}",
        hist.len(),
        &hist[hist.len().saturating_sub(5)..],
        read(&env.path().join("out/worker1.txt")).len()
    );
    format!(
        "{}\nstderr: {}\npanes: {panes}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn audit_path(env: &TestEnv) -> PathBuf {
    env.state.path().join("m").join("audit.jsonl")
}

/// The audit log's `delivered` records.
fn deliveries(env: &TestEnv) -> Vec<serde_json::Value> {
    read(&audit_path(env))
        .lines()
        .filter(|l| l.contains("\"kind\":\"delivered\""))
        .map(|l| serde_json::from_str(l).expect("audit json"))
        .collect()
}

#[test]
fn hostile_messages_arrive_byte_exact_and_nothing_runs() {
    let env = TestEnv::new();
    let out = up(&env, "hierarchy");
    let pwned = env.path().join("pwned");
    let big: String = (0..1000)
        .map(|i| format!("{i:04} {}\n", "abcdefghij".repeat(10)))
        .collect::<String>()
        + "END-OF-BIG-MESSAGE";
    assert!(big.len() > 100_000);
    let messages: Vec<String> = vec![
        "it's \"quoted\" 'both' ways".into(),
        "ends with a separator;".into(),
        "-n leading dash".into(),
        format!("$(touch {})", pwned.display()),
        format!("`touch {}`", pwned.display()),
        "#{pane_id} #{session_name} ##{x}".into(),
        "before\x1b[201~after\x1b[31mred\x07bell\x1b]0;title\x07 \r\x03\x04\x7f end".into(),
        "line one\nline two\n\tindented ; \\ $HOME".into(),
        "emoji 🎉🚀 and CJK 漢字かなカナ 한국어".into(),
        big,
    ];
    let mut expected = String::new();
    for m in &messages {
        let o = env.orch(&["send", "worker1", m]);
        let stdout = String::from_utf8_lossy(&o.stdout);
        let pane = env.pane_of("m", "worker1").id;
        assert!(
            o.status.success() && stdout.starts_with("worker1: delivered"),
            "sending {:?}... ({} bytes): {stdout}{}\nscreen:\n{}",
            &m[..m.floor_char_boundary(40)],
            m.len(),
            String::from_utf8_lossy(&o.stderr),
            diagnose(&env, &pane)
        );
        expected.push_str(&orch::tmux::paste_safe(m));
        expected.push('\n');
    }
    expect_file(&out.join("worker1.txt"), &expected);
    // Also through stdin and --file.
    let mut child = env
        .orch_command(&["send", "worker1", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"from stdin; `id`\n").expect("write");
    }
    assert!(child.wait_with_output().expect("wait").status.success());
    let file = env.write("msg.txt", "from a file $(id)\n");
    env.orch_ok(&["send", "--file", file.to_str().expect("utf8"), "worker1"]);
    expected.push_str("from stdin; `id`\n\nfrom a file $(id)\n\n");
    expect_file(&out.join("worker1.txt"), &expected);
    assert!(!pwned.exists(), "a message ran a command");
    assert!(
        !env.tmux(&["list-sessions", "-F", "#{session_name}"])
            .is_empty(),
        "the tmux server died"
    );
    let events = read(&env.state.path().join("m/events.jsonl"));
    assert!(
        events.contains("\"kind\":\"message_delivered\""),
        "{events}"
    );
    assert!(events.contains("\"latency_ms\""), "{events}");
}

#[test]
fn priorities_hold_while_the_pane_is_in_copy_mode() {
    let env = TestEnv::new();
    let out = up(&env, "hierarchy");
    let pane = env.pane_of("m", "worker1").id;
    env.tmux(&["copy-mode", "-t", &pane]);
    wait_for("copy mode", Duration::from_secs(5), || {
        (env.tmux(&["display", "-p", "-t", &pane, "#{pane_in_mode}"])
            .trim()
            == "1")
            .then_some(())
    });
    for (p, text) in [
        ("low", "L1"),
        ("normal", "N1"),
        ("high", "H1"),
        ("high", "H2"),
    ] {
        let stdout = env.orch_ok(&["send", "--priority", p, "worker1", text]);
        assert!(stdout.contains("queued"), "{stdout}");
        assert!(stdout.contains("copy mode"), "{stdout}");
    }
    let queued = std::fs::read_dir(env.state.path().join("m/queue/worker1"))
        .expect("queue dir")
        .filter(|e| {
            e.as_ref()
                .map(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .unwrap_or(false)
        })
        .count();
    assert_eq!(queued, 4);
    assert_eq!(read(&out.join("worker1.txt")), "");
    env.tmux(&["send-keys", "-t", &pane, "-X", "cancel"]);
    let stdout = env.orch_ok(&["send", "--wait", "worker1", "N2"]);
    assert!(stdout.starts_with("worker1: delivered"), "{stdout}");
    expect_file(&out.join("worker1.txt"), "H1\nH2\nN1\nN2\nL1\n");
}

#[test]
fn acl_refuses_upward_skips_under_hierarchy_and_allows_under_open() {
    let env = TestEnv::new();
    let out = up(&env, "hierarchy");
    let as_worker = |args: &[&str]| {
        env.orch_command(args)
            .env("ORCH_AGENT", "worker1")
            .env("ORCH_SESSION", "m")
            .output()
            .expect("run orch")
    };
    let refused = as_worker(&["send", "president", "let me in"]);
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("WORKER worker1 may not message PRESIDENT president")
            && err.contains("hierarchy"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let audit = read(&audit_path(&env));
    assert!(audit.contains("\"kind\":\"refused\""), "{audit}");
    assert!(audit.contains("\"from\":\"worker1\""), "{audit}");
    // One level up is a reply: allowed.
    let ok = as_worker(&["send", "boss1", "done"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    expect_file(&out.join("boss1.txt"), "done\n");
    assert_eq!(read(&out.join("president.txt")), "");
    // `all` reaches whom the ACL allows and names the others.
    let all = as_worker(&["send", "all", "to all"]);
    assert!(
        all.status.success(),
        "{}",
        String::from_utf8_lossy(&all.stderr)
    );
    let err = String::from_utf8_lossy(&all.stderr);
    assert!(
        err.contains("skipped") && err.contains("president"),
        "{err}"
    );
    expect_file(&out.join("boss1.txt"), "done\nto all\n");
    assert_eq!(read(&out.join("president.txt")), "");
    // Under `open` the same message goes through.
    write_layout(&env, "open");
    let ok = as_worker(&["send", "president", "let me in"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    expect_file(&out.join("president.txt"), "let me in\n");
    // The user outside panes may message anyone.
    write_layout(&env, "hierarchy");
    env.orch_ok(&["send", "president", "from the user"]);
    expect_file(&out.join("president.txt"), "let me in\nfrom the user\n");
}

#[test]
fn audit_verify_passes_then_names_the_line_after_a_changed_byte() {
    let env = TestEnv::new();
    up(&env, "hierarchy");
    env.orch_ok(&["send", "worker1", "one"]);
    env.orch_ok(&["send", "boss1", "two"]);
    let stdout = env.orch_ok(&["audit", "verify"]);
    assert!(stdout.starts_with("ok:"), "{stdout}");
    let path = audit_path(&env);
    let mut bytes = std::fs::read(&path).expect("audit");
    assert!(bytes.split(|&b| b == b'\n').count() > 3);
    // Change one byte of line 2's sender: the chain breaks at line 3.
    let line2 = bytes.iter().position(|&b| b == b'\n').expect("line 1") + 1;
    let at = line2
        + bytes[line2..]
            .windows(6)
            .position(|w| w == b"\"user\"")
            .expect("a sender in line 2")
        + 1;
    bytes[at] = b'U';
    std::fs::write(&path, &bytes).expect("write");
    let bad = env.orch(&["audit", "verify"]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("line 3"), "{err}");
}

#[test]
fn a_dead_agents_message_stays_queued_and_send_says_so() {
    let env = TestEnv::new();
    up(&env, "hierarchy");
    wait_for("dead1 to exit", Duration::from_secs(10), || {
        env.pane_of("m", "dead1").dead.then_some(())
    });
    let stdout = env.orch_ok(&["send", "dead1", "are you there?"]);
    assert!(stdout.contains("dead1: queued"), "{stdout}");
    assert!(stdout.contains("dead"), "{stdout}");
    let queue = env.state.path().join("m/queue/dead1");
    let files: Vec<String> = std::fs::read_dir(&queue)
        .expect("queue")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let wait = env.orch(&["send", "--wait", "--timeout", "300ms", "dead1", "still?"]);
    assert_eq!(wait.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wait.stdout).contains("not delivered within"));
    let unknown = env.orch(&["send", "nobody", "hi"]);
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn no_enter_pastes_without_submitting() {
    let env = TestEnv::new();
    let out = up(&env, "hierarchy");
    let stdout = env.orch_ok(&["send", "--no-enter", "worker1", "draft "]);
    assert!(stdout.starts_with("worker1: delivered"), "{stdout}");
    env.orch_ok(&["send", "worker1", "and the rest"]);
    // One line: the first paste was not submitted on its own.
    expect_file(&out.join("worker1.txt"), "draft and the rest\n");
}

#[test]
fn text_that_never_shows_fails_without_enter_and_is_set_aside() {
    let env = TestEnv::new();
    let file = env.path().join("silent.txt");
    // Reads keys one by one and draws nothing: a full-screen program whose screen orch
    // cannot see the text on.
    env.write(
        "orch.yaml",
        &format!(
            "session: m\nagents:\n  - {{ name: silent, role: WORKER, command: \"stty -echo -icanon && exec cat > '{}'\" }}\n",
            file.display()
        ),
    );
    env.orch_ok(&["layout", "up"]);
    wait_for("cat to run", Duration::from_secs(10), || {
        file.exists().then_some(())
    });
    let o = env.orch(&["send", "silent", "you will not see this"]);
    assert_eq!(o.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("silent: failed") && stdout.contains("Enter was not sent"),
        "{stdout}"
    );
    std::thread::sleep(Duration::from_millis(200));
    // The bytes reached it (it reads them one by one), the Enter did not.
    assert_eq!(read(&file), "you will not see this", "Enter was pressed");
    let failed = env.state.path().join("m/queue/silent/failed");
    assert_eq!(std::fs::read_dir(&failed).expect("failed dir").count(), 1);
    let events = read(&env.state.path().join("m/events.jsonl"));
    assert!(events.contains("\"kind\":\"message_failed\""), "{events}");
    let audit = read(&audit_path(&env));
    assert!(audit.contains("\"kind\":\"failed\""), "{audit}");
}

#[test]
fn a_program_that_does_not_echo_gets_its_enter_and_the_audit_says_how() {
    let env = TestEnv::new();
    let file = env.path().join("got.txt");
    env.write(
        "orch.yaml",
        &format!(
            "session: m\nagents:\n  - {{ name: quiet, role: WORKER, command: \"stty -echo && exec cat > '{}'\" }}\n",
            file.display()
        ),
    );
    env.orch_ok(&["layout", "up"]);
    wait_for("cat to run", Duration::from_secs(10), || {
        file.exists().then_some(())
    });
    for m in ["first message", "second message"] {
        let out = env.orch_ok(&["send", "quiet", m]);
        assert!(out.starts_with("quiet: delivered"), "{out}");
    }
    // Each one submitted on its own line: the second did not run into the first.
    expect_file(&file, "first message\nsecond message\n");
    let delivered = deliveries(&env);
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    for v in delivered {
        assert_eq!(v["confirmation"], "no_echo", "{v}");
        assert_eq!(v["submitted"], true, "{v}");
    }
    // A program asking for a password with echo off is not given a message as one.
    let file2 = env.path().join("pw.txt");
    env.write(
        "orch.yaml",
        &format!(
            "session: m2\nagents:\n  - {{ name: pw, role: WORKER, command: \"printf 'Password: '; stty -echo && exec cat > '{}'\" }}\n",
            file2.display()
        ),
    );
    env.orch_ok(&["layout", "up"]);
    wait_for("cat to run", Duration::from_secs(10), || {
        file2.exists().then_some(())
    });
    let out = env.orch_ok(&["send", "pw", "not a password"]);
    assert!(
        out.contains("queued") && out.contains("password prompt"),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(read(&file2), "");
}

#[test]
fn a_message_to_a_stopped_agent_is_delivered_by_the_supervisor_after_its_restart() {
    let env = TestEnv::new();
    let file = env.path().join("got.txt");
    env.write(
        "orch.yaml",
        &format!(
            "session: q\nmonitor: {{ tick: 200ms }}\nagents:\n  - {{ name: w, role: WORKER, profile: claude, command: \"stty -echo -icanon && exec tee -a '{}'\" }}\n",
            file.display()
        ),
    );
    let mut sup = support::Supervisor::start(&env);
    sup.expect("agent_started", Some("w"), Duration::from_secs(10));
    env.orch_ok(&["stop", "w"]);
    sup.expect("agent_stopped", Some("w"), Duration::from_secs(10));
    let out = env.orch_ok(&["send", "w", "hello after restart"]);
    assert!(out.contains("queued"), "{out}");
    env.orch_ok(&["start", "w"]);
    sup.expect("agent_restarted", Some("w"), Duration::from_secs(10));
    let got = support::wait_for("the queued message", Duration::from_secs(10), || {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|t| t.contains("hello after restart\n"))
    });
    assert_eq!(got, "hello after restart\n");
    let delivered = sup.expect("message_delivered", Some("w"), Duration::from_secs(5));
    assert!(delivered["latency_ms"].as_u64().is_some(), "{delivered}");
}

fn sim(args: &str) -> String {
    format!("'{}' agent-sim {args}", env!("CARGO_BIN_EXE_orch"))
}

#[test]
fn when_idle_waits_for_an_idle_screen_and_instructions_come_first() {
    let env = TestEnv::new();
    env.write(
        "prompts/w.md",
        "You are worker w.\nTake tasks from boss1.\n",
    );
    env.write(
        "orch.yaml",
        &format!(
            "session: wi\nmonitor: {{ tick: 200ms }}\nagents:\n  - {{ name: w, role: WORKER, profile: codex, instructions: prompts/w.md, command: \"{}\" }}\n",
            sim("--profile codex --work-every 100ms --idle-after 2s")
        ),
    );
    let mut sup = support::Supervisor::start(&env);
    sup.expect("agent_started", Some("w"), Duration::from_secs(10));
    let out = env.orch_ok(&["send", "--when", "idle", "w", "next task please"]);
    assert!(
        out.contains("queued"),
        "while it works, the message waits: {out}"
    );
    let pane = env.pane_of("wi", "w").id;
    let screen = || env.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", &pane]);
    assert!(!screen().contains("received: next task"), "not before idle");
    let text = wait_for(
        "instructions, then the message",
        Duration::from_secs(20),
        || {
            let s = screen();
            s.contains("received: next task please").then_some(s)
        },
    );
    let instructions = text
        .find("received: You are worker w.")
        .expect("instructions delivered");
    let message = text
        .find("received: next task please")
        .expect("message delivered");
    assert!(instructions < message, "instructions first:\n{text}");
}

#[test]
fn a_queued_message_survives_until_a_new_supervisor_delivers_it() {
    let env = TestEnv::new();
    let file = env.path().join("got.txt");
    env.write(
        "orch.yaml",
        &format!(
            "session: sr\nmonitor: {{ tick: 200ms }}\nagents:\n  - {{ name: w, role: WORKER, profile: claude, restart: {{ policy: always }}, command: \"stty -echo -icanon && exec tee -a '{}'\" }}\n",
            file.display()
        ),
    );
    // No supervisor: the agent is stopped, the message can only wait on disk.
    env.orch_ok(&["layout", "up"]);
    env.orch_ok(&["stop", "w"]);
    let out = env.orch_ok(&["send", "w", "kept across orch restarts"]);
    assert!(out.contains("queued"), "{out}");
    assert!(
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .is_empty()
    );
    // A supervisor starting later restarts the agent and delivers what waited.
    let mut sup = support::Supervisor::start(&env);
    sup.expect("agent_restarted", Some("w"), Duration::from_secs(10));
    let got = wait_for("the message", Duration::from_secs(10), || {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|t| t.contains("kept across orch restarts\n"))
    });
    assert_eq!(got, "kept across orch restarts\n");
    // The audit record of the delivery is written once its submission was seen, after
    // the text reached the file: verified before, it could be caught half written.
    sup.expect("message_delivered", Some("w"), Duration::from_secs(10));
    let verify = env.orch_ok(&["audit", "verify"]);
    assert_eq!(verify.lines().count(), 1, "{verify}");
}

#[test]
fn snapshots_carry_the_last_and_the_pending_messages_through_a_restore() {
    let env = TestEnv::new();
    let got = env.path().join("v.txt");
    env.write(
        "orch.yaml",
        &format!(
            "session: sn\nagents:\n  - {{ name: v, role: WORKER, command: \"stty -echo -icanon && exec tee -a '{}'\" }}\n  - {{ name: w, role: WORKER, command: 'exec sleep 600' }}\n",
            got.display()
        ),
    );
    env.orch_ok(&["layout", "up"]);
    let out = env.orch_ok(&["send", "v", "fix the parser"]);
    assert!(out.contains("delivered"), "{out}");
    env.orch_ok(&["stop", "w"]);
    let out = env.orch_ok(&["send", "--priority", "high", "w", "review PR 7"]);
    assert!(out.contains("queued"), "{out}");
    let path = env
        .orch_ok(&["snapshot"])
        .lines()
        .last()
        .expect("path")
        .to_owned();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("snapshot")).expect("json");
    let agent = |n: &str| {
        doc["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == n))
            .expect("agent")
            .clone()
    };
    assert_eq!(agent("v")["last_message"], "fix the parser");
    assert_eq!(agent("w")["pending"][0]["text"], "review PR 7");

    // The queue goes with the session: lose it, restore, and the message waits again.
    env.kill_server();
    std::fs::remove_dir_all(env.state.path().join("sn/queue")).expect("rm queue");
    let out = env.orch_ok(&["restore", "latest", "--no-handover"]);
    assert!(out.contains("restored"), "{out}");
    let queued: Vec<serde_json::Value> = std::fs::read_dir(env.state.path().join("sn/queue/w"))
        .expect("w's queue")
        .flatten()
        .filter(|e| {
            e.file_name().to_string_lossy().ends_with(".json")
                && !e.file_name().to_string_lossy().starts_with('.')
        })
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).expect("read")).expect("message"))
        .collect();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0]["text"], "review PR 7");
    assert_eq!(queued[0]["priority"], "high");
}

/// A stand-in for a CLI starved of CPU: it echoes what it reads, but once Enter comes it
/// draws nothing for 3 s, then submits. Every Enter it reads is logged. `slow LOG` keeps
/// its screen as it was meanwhile; `clears LOG` is Gemini-like: it clears its whole
/// screen to redraw (as Gemini CLI does when its banner, theme or terminal background
/// change), then draws its turn and its empty input.
const STARVED_CLI: &str = r#"#!/usr/bin/env python3
import os, sys, time, tty
tty.setraw(0)
clears = sys.argv[1] == "clears"
log = open(sys.argv[2], "a")
line = ""
os.write(1, b" >   Type your message or @path/to/file\r\n > " if clears else b"> ")
while True:
    for ch in os.read(0, 4096).decode(errors="replace"):
        if ch == "\r":
            log.write("enter\n"); log.flush()
            if clears:
                os.write(1, b"\x1b[2J\x1b[3J\x1b[H")
            time.sleep(3)
            log.write("submitted: " + line + "\n"); log.flush()
            if clears:
                os.write(1, (" > " + line + "\r\n \u280b Thinking... (esc to cancel, 0s)\r\n >   Type your message or @path/to/file\r\n").encode())
            else:
                os.write(1, b"\r\nworking on it\r\n> ")
            line = ""
        else:
            line += ch
            os.write(1, ch.encode())
"#;

#[test]
fn a_cli_slow_to_take_enter_is_not_sent_a_second_one() {
    let env = TestEnv::new();
    let script = env.write("slow.py", STARVED_CLI);
    let command = format!("exec python3 '{}' slow", script.display());
    // While a screen stood still nobody pressed Enter again.
    each_submitted_once(&env, "shell", &command, ">");
}

/// Two agents `one` and `two` of `profile`, each running `command <its log>`, are sent a
/// message each and then one to both (one paste and one Enter for all of them); each
/// log, where the stand-in writes every Enter it reads and what it submitted, must show
/// one Enter per message, and the audit no retry.
fn each_submitted_once(env: &TestEnv, profile: &str, command: &str, prompt: &str) {
    let log = |a: &str| env.path().join(format!("{a}.log"));
    let agent = |a: &str| {
        format!(
            "  - {{ name: {a}, role: WORKER, profile: {profile}, command: \"{command} '{}'\" }}\n",
            log(a).display()
        )
    };
    env.write(
        "orch.yaml",
        &format!("session: m\nagents:\n{}{}", agent("one"), agent("two")),
    );
    env.orch_ok(&["layout", "up"]);
    for a in ["one", "two"] {
        wait_for("the prompt", Duration::from_secs(10), || {
            let pane = env.pane_of("m", a);
            env.tmux(&["capture-pane", "-p", "-t", &pane.id])
                .contains(prompt)
                .then_some(())
        });
    }
    let out = env.orch_ok(&["send", "one", "review the branch"]);
    assert!(out.starts_with("one: delivered"), "{out}");
    let out = env.orch_ok(&["send", "all", "merge it"]);
    assert_eq!(out.matches(": delivered").count(), 2, "{out}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        read(&log("one")),
        "enter\nsubmitted: review the branch\nenter\nsubmitted: merge it\n"
    );
    assert_eq!(read(&log("two")), "enter\nsubmitted: merge it\n");
    let delivered = deliveries(env);
    assert_eq!(delivered.len(), 3, "{delivered:?}");
    for v in delivered {
        assert_eq!(v["submitted"], true, "{v}");
        assert_eq!(v["retries"], 0, "{v}");
    }
}

#[test]
fn a_screen_cleared_for_a_slow_redraw_is_not_taken_for_a_refused_enter() {
    let env = TestEnv::new();
    // Named `gemini`, so orch reads its screen as Gemini CLI's: a turn or an empty input
    // is what submitted looks like, and a blank screen is neither.
    let script = env.write("bin/gemini", STARVED_CLI);
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    // A blank screen standing still for 3 s was no sign of a refusal.
    let command = format!("{} clears", script.display());
    each_submitted_once(&env, "gemini", &command, "Type your message");
}
