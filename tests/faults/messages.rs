//! Breaks 4 and 5: a corrupt queue file (never delivered, never reported, not re-queued
//! by restore), an unwritable audit log (messages pasted with no audit line), and torn,
//! emptied or edited journals.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::support::{Supervisor, TestEnv, wait_for};
use super::{session_dir, stderr};

const LAYOUT: &str = "session: m\nagents:\n  - { name: a0, role: WORKER, command: 'exec cat' }\n";

fn queue_files(env: &TestEnv, agent: &str) -> Vec<PathBuf> {
    let dir = session_dir(env, "m").join("queue").join(agent);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

fn screen(env: &TestEnv, pane: &str) -> String {
    env.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", pane])
}

/// The session up with a0's pane in copy mode, so what is sent to it waits in its queue.
fn up_in_copy_mode(env: &TestEnv) -> String {
    env.write("orch.yaml", LAYOUT);
    env.orch_ok(&["layout", "up"]);
    let pane = wait_for("a0's pane", Duration::from_secs(10), || {
        env.panes("m").into_iter().find(|p| !p.dead).map(|p| p.id)
    });
    env.tmux(&["copy-mode", "-t", &pane]);
    pane
}

#[test]
fn a_corrupt_queue_file_is_set_aside_reported_and_its_message_recovered() {
    let env = TestEnv::new();
    let pane = up_in_copy_mode(&env);
    let out = env.orch_ok(&["send", "a0", "first message from the boss"]);
    assert!(out.contains("queued"), "{out}");
    env.orch_ok(&["snapshot"]);
    let files = queue_files(&env, "a0");
    assert_eq!(files.len(), 1);
    std::fs::write(&files[0], b"{\"id\": \"trunc").expect("corrupt it");
    // Nothing says so on its own yet; status does.
    let status = env.orch(&["status"]);
    assert!(
        stderr(&status).contains("could not be read"),
        "{}",
        stderr(&status)
    );

    env.tmux(&["send-keys", "-t", &pane, "-X", "cancel"]);
    let out = env.orch(&["send", "a0", "second message"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("could not be read") && err.contains("queued again from snapshot"),
        "{err}"
    );
    wait_for("both messages on screen", Duration::from_secs(20), || {
        let s = screen(&env, &pane);
        (s.contains("first message from the boss") && s.contains("second message")).then_some(())
    });
    let corrupt = session_dir(&env, "m").join("queue/a0/corrupt");
    assert_eq!(std::fs::read_dir(&corrupt).expect("corrupt dir").count(), 1);
    let events = env.orch_ok(&["events", "--json"]);
    let ev: serde_json::Value = events
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|e: &serde_json::Value| e["kind"] == "message_corrupt")
        .expect("a message_corrupt event");
    assert_eq!(ev["recovered"], true, "{ev}");
    let status = env.orch(&["status"]);
    assert!(stderr(&status).contains("set aside"), "{}", stderr(&status));
    assert!(env.orch_ok(&["audit", "verify"]).starts_with("ok"));
}

#[test]
fn restore_queues_again_a_message_whose_queue_file_is_corrupt() {
    let env = TestEnv::new();
    up_in_copy_mode(&env);
    env.orch_ok(&["send", "a0", "keep me across the restore"]);
    env.orch_ok(&["snapshot"]);
    let files = queue_files(&env, "a0");
    std::fs::write(&files[0], b"\xff\xfe not json").expect("corrupt it");
    env.kill_server();
    wait_for("server gone", Duration::from_secs(10), || {
        (!env.session_exists("m")).then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    env.orch_ok(&["restore", "latest", "--no-handover"]);
    let texts: Vec<String> = queue_files(&env, "a0")
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect();
    assert!(
        texts.iter().any(|t| t == "keep me across the restore"),
        "re-queued from the snapshot: {texts:?}"
    );
    let corrupt = session_dir(&env, "m").join("queue/a0/corrupt");
    assert_eq!(std::fs::read_dir(&corrupt).expect("corrupt dir").count(), 1);
}

/// Makes `audit.jsonl` impossible to write (a folder in its place: root ignores modes).
fn break_audit(dir: &Path) -> PathBuf {
    let audit = dir.join("audit.jsonl");
    let aside = dir.join("audit.jsonl.aside");
    if audit.exists() {
        std::fs::rename(&audit, &aside).expect("move audit aside");
    }
    std::fs::create_dir(&audit).expect("folder in its place");
    aside
}

fn repair_audit(dir: &Path, aside: &Path) {
    let audit = dir.join("audit.jsonl");
    std::fs::remove_dir(&audit).expect("rmdir");
    if aside.exists() {
        std::fs::rename(aside, &audit).expect("put back");
    }
}

#[test]
fn no_message_is_pasted_while_its_audit_line_cannot_be_written() {
    let env = TestEnv::new();
    let pane = up_in_copy_mode(&env);
    let dir = session_dir(&env, "m");
    // orch send refuses outright: nothing queued, nothing pasted.
    let aside = break_audit(&dir);
    let out = env.orch(&["send", "a0", "unaudited one"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nothing was sent"),
        "{}",
        stderr(&out)
    );
    assert!(queue_files(&env, "a0").is_empty());
    repair_audit(&dir, &aside);

    // A message queued while the audit log worked waits while it does not.
    env.orch_ok(&["send", "a0", "audited later"]);
    let mut sup = Supervisor::start(&env);
    sup.expect("agent_started", Some("a0"), Duration::from_secs(10));
    let aside = break_audit(&dir);
    env.tmux(&["send-keys", "-t", &pane, "-X", "cancel"]);
    let failed = sup.expect("write_failed", None, Duration::from_secs(10));
    assert_eq!(failed["what"], "audit", "{failed}");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !screen(&env, &pane).contains("audited later"),
        "pasted without an audit line"
    );
    assert_eq!(queue_files(&env, "a0").len(), 1, "still queued");
    let again = sup.drain_for(Duration::from_millis(1200));
    assert!(
        again.iter().all(|e| e["kind"] != "write_failed"),
        "reported once, not every tick: {again:?}"
    );

    repair_audit(&dir, &aside);
    sup.expect("message_delivered", Some("a0"), Duration::from_secs(10));
    let back = sup.expect("write_recovered", None, Duration::from_secs(5));
    assert_eq!(back["what"], "audit");
    assert!(screen(&env, &pane).contains("audited later"));
    let audit = std::fs::read_to_string(dir.join("audit.jsonl")).expect("audit");
    assert!(audit.contains("\"kind\":\"delivering\"") && audit.contains("\"kind\":\"delivered\""));
    assert!(env.orch_ok(&["audit", "verify"]).starts_with("ok"));
}

#[test]
fn a_torn_or_undecodable_event_line_is_closed_off_and_skipped_not_fatal() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        "session: m\nagents:\n  - { name: a0, role: WORKER, command: 'exec sleep 600' }\n",
    );
    let dir = session_dir(&env, "m");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    std::fs::write(
        dir.join("events.jsonl"),
        b"{\"ts\":\"2026-01-01T00:00:00.000Z\",\"kind\":\"session_up\"}\n{\"ts\":\"2026-01-01T00:00:01",
    )
    .expect("torn journal");
    let mut sup = Supervisor::start(&env);
    sup.expect("agent_started", Some("a0"), Duration::from_secs(10));
    drop(sup);
    let out = env.orch(&["events", "--json"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
    }
    assert!(text.contains("\"supervisor_started\""), "{text}");
    assert!(stderr(&out).contains("skipped 1 line"), "{}", stderr(&out));

    let mut journal = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("events.jsonl"))
        .expect("open");
    std::io::Write::write_all(&mut journal, b"\xff\xfe\xfd not text\n").expect("write");
    let out = env.orch(&["events"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("supervisor_started"));
    assert!(stderr(&out).contains("skipped 2 line"), "{}", stderr(&out));
}

#[test]
fn a_torn_audit_tail_is_named_torn_and_an_emptied_or_edited_log_is_caught() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        "session: m\nagents:\n  - { name: a0, role: WORKER, command: 'exec cat' }\n",
    );
    // No session: the messages wait in the queue; their audit lines are written.
    env.orch_ok(&["send", "a0", "one"]);
    env.orch_ok(&["send", "a0", "two"]);
    let audit = session_dir(&env, "m").join("audit.jsonl");
    let good = std::fs::read(&audit).expect("audit");
    let mut torn = good.clone();
    torn.extend_from_slice(b"{\"prev\":\"0123\",\"ts\":\"2026-01-");
    std::fs::write(&audit, &torn).expect("tear");
    let out = env.orch(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "a torn tail is not tampering: {}",
        stderr(&out)
    );
    env.orch_ok(&["send", "a0", "three"]);
    let out = env.orch_ok(&["audit", "verify"]);
    assert!(out.contains("torn write"), "{out}");

    let ok = std::fs::read(&audit).expect("audit");
    std::fs::write(&audit, b"").expect("empty");
    let out = env.orch(&["audit", "verify"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an emptied log: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8(ok.clone()).expect("utf8");
    let edited = text.replacen("\"three\"", "\"3\"", 1);
    let edited = if edited == text {
        // The text is not in the audit line; change its last record's timestamp instead.
        let (head, last) = text.trim_end().rsplit_once('\n').expect("lines");
        format!("{head}\n{}\n", last.replacen("\"ts\":\"2", "\"ts\":\"1", 1))
    } else {
        edited
    };
    std::fs::write(&audit, edited).expect("edit last line");
    let out = env.orch(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "an edited last line");
    std::fs::write(&audit, ok).expect("put back");
    assert!(env.orch_ok(&["audit", "verify"]).starts_with("ok"));
}
