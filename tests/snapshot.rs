//! `orch snapshot`: what it captures, how it survives corruption and kills, redaction,
//! file modes and content addressing, on real tmux.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use orch::snapshot::format::Snapshot;
use support::{TestEnv, wait_for};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `orch snapshot`; returns the document it wrote (its last stdout line).
fn snapshot(env: &TestEnv) -> PathBuf {
    let out = env.orch_ok(&["snapshot"]);
    let last = out.lines().last().expect("output");
    let path = PathBuf::from(last);
    assert!(path.is_file(), "{out}");
    path
}

fn read_doc(path: &Path) -> Snapshot {
    serde_json::from_slice(&std::fs::read(path).expect("read doc")).expect("parse doc")
}

fn session_dir(env: &TestEnv, session: &str) -> PathBuf {
    env.state.path().join(session)
}

fn blob(env: &TestEnv, session: &str, sha: &str) -> Vec<u8> {
    std::fs::read(session_dir(env, session).join("snapshots/blobs").join(sha)).expect("blob")
}

/// Waits until every pane of `session` shows `marker` on its screen.
fn wait_for_output(env: &TestEnv, session: &str, marker: &str) {
    wait_for(
        &format!("every pane to print {marker}"),
        Duration::from_secs(20),
        || {
            env.panes(session)
                .iter()
                .all(|p| {
                    env.tmux(&["capture-pane", "-p", "-J", "-t", &p.id])
                        .lines()
                        .any(|l| l.trim_end() == marker)
                })
                .then_some(())
        },
    );
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        out.push(p.clone());
        if p.is_dir() {
            all_files(&p, out);
        }
    }
}

#[test]
fn nine_panes_of_ten_thousand_lines_are_captured_whole_and_in_order() {
    let env = TestEnv::new();
    let yaml = support::workers(
        "session: big\nsnapshot: { scrollback_lines: 20000 }\n",
        9,
        |i| format!("seq 1 10000; echo done-{i}; exec sleep 600"),
    );
    env.write("orch.yaml", &yaml);
    env.orch_ok(&["layout", "up"]);
    for i in 0..9 {
        let pane = env.pane_of("big", &format!("a{i}"));
        wait_for(&format!("a{i} to finish"), Duration::from_secs(30), || {
            env.tmux(&["capture-pane", "-p", "-J", "-t", &pane.id])
                .contains(&format!("done-{i}"))
                .then_some(())
        });
    }
    let doc = read_doc(&snapshot(&env));
    assert_eq!(doc.agents.len(), 9);
    assert!(doc.window.width > 0 && doc.window.height > 0 && !doc.window.layout.is_empty());
    for a in &doc.agents {
        assert_eq!(a.state, "running", "{}", a.name);
        let b = a.scrollback.as_ref().expect("scrollback");
        let text = blob(&env, "big", &b.sha256);
        assert_eq!(text.len() as u64, b.bytes);
        let numbers: Vec<u32> = String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|l| l.trim_end().parse().ok())
            .collect();
        assert_eq!(
            numbers,
            (1..=10_000).collect::<Vec<u32>>(),
            "{}: {} numbers",
            a.name,
            numbers.len()
        );
        assert!(b.lines >= 10_001, "{}: {} lines", a.name, b.lines);
    }
}

#[test]
fn a_truncated_snapshot_is_reported_corrupt_and_latest_skips_it() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        "session: tr\nagents:\n  - { name: a, role: BOSS, command: 'echo hello-a; exec sleep 600' }\n  - { name: b, role: WORKER, command: 'echo hello-b; exec sleep 600' }\n",
    );
    env.orch_ok(&["layout", "up"]);
    let good = snapshot(&env);
    std::thread::sleep(Duration::from_millis(5));
    let bad = snapshot(&env);
    let good_id = read_doc(&good).id;
    let bad_id = read_doc(&bad).id;
    assert!(bad_id > good_id);
    let len = std::fs::metadata(&bad).expect("meta").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&bad)
        .expect("open");
    f.set_len(len / 2).expect("truncate");

    let listed = json(&env.orch_ok(&["snapshot", "list", "--json"]));
    let rows = listed.as_array().expect("array");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], good_id.as_str());
    assert_eq!(rows[0]["ok"], true);
    assert_eq!(rows[1]["id"], bad_id.as_str());
    assert_eq!(rows[1]["ok"], false, "{listed}");
    assert!(rows[1]["error"].is_string());
    let table = env.orch_ok(&["snapshot", "list"]);
    assert!(table.contains("CORRUPT"), "{table}");

    let loaded = orch::snapshot::load(&session_dir(&env, "tr"), "latest").expect("latest");
    assert_eq!(loaded.snapshot.id, good_id);
    assert_eq!(loaded.skipped.len(), 1);
    assert_eq!(loaded.skipped[0].0, bad_id);
    assert!(orch::snapshot::load(&session_dir(&env, "tr"), &bad_id).is_err());
    let show = env.orch_ok(&["snapshot", "show", "latest"]);
    assert!(
        show.contains(&good_id) && show.contains("skipped corrupt"),
        "{show}"
    );

    // A blob that changed on disk makes every snapshot using it corrupt.
    let sha = loaded.snapshot.agents[0]
        .scrollback
        .as_ref()
        .expect("blob")
        .sha256
        .clone();
    let path = session_dir(&env, "tr").join("snapshots/blobs").join(&sha);
    let mut bytes = std::fs::read(&path).expect("blob");
    bytes[0] ^= 1;
    std::fs::write(&path, bytes).expect("write");
    let err = orch::snapshot::load(&session_dir(&env, "tr"), "latest").expect_err("no good one");
    assert!(format!("{err:#}").contains("hash"), "{err:#}");
}

#[test]
fn snapshots_killed_at_random_moments_never_leave_a_good_looking_bad_one() {
    let env = TestEnv::new();
    let yaml = support::workers("session: kill\nsnapshot: { keep: 100 }\n", 3, |_| {
        "seq 1 3000; exec sleep 600".to_owned()
    });
    env.write("orch.yaml", &yaml);
    env.orch_ok(&["layout", "up"]);
    wait_for_output(&env, "kill", "3000");
    let dir = session_dir(&env, "kill");
    let mut seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    for _ in 0..50 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay = Duration::from_micros((seed >> 33) % 30_001);
        let mut child = env
            .orch_command(&["snapshot"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL, our own child only
        let _ = child.wait();
    }
    let listed = orch::snapshot::list(&dir).expect("list");
    for l in &listed {
        if l.ok.is_ok() {
            let loaded = orch::snapshot::load(&dir, &l.id).expect("a good snapshot loads");
            for (sha, path) in &loaded.blobs {
                let bytes = std::fs::read(path).expect("blob");
                assert_eq!(&orch::digest::sha256_hex(&bytes), sha);
            }
        }
    }
    // The next snapshot works and sweeps what the killed ones left behind.
    let path = snapshot(&env);
    assert_eq!(read_doc(&path).agents.len(), 3);
    let mut files = Vec::new();
    all_files(&dir.join("snapshots"), &mut files);
    let leftovers: Vec<_> = files
        .iter()
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let good = orch::snapshot::list(&dir)
        .expect("list")
        .iter()
        .filter(|l| l.ok.is_ok())
        .count();
    assert!(good >= 1);
}

#[test]
fn secrets_never_reach_the_state_dir_and_files_are_private() {
    let env = TestEnv::new();
    let secrets = [
        "sk-abcdefghijklmnopqrstuvwx1234",
        "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz_0123456789",
        "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx99",
        "ghp_0123456789abcdefghijABCDEFGHIJ012345",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
        "AKIAIOSFODNN7EXAMPLE",
        "xoxb-1234567890-abcdefghij",
        "xoxp-1234567890-abcdefghij",
        "internal-424242",
    ];
    let mut script = String::new();
    for s in secrets {
        script.push_str(&format!("printf 'key: %s\\n' '{s}'\n"));
    }
    // A key coloured half red, half green; a PEM block.
    script.push_str(
        "printf 'sk-colour\\033[31mSPLITabcdefghij\\033[32mTAILklmnopqrstu\\033[0m\\n'\n",
    );
    script.push_str("printf -- '-----BEGIN RSA PRIVATE KEY-----\\nPEMBODYLINEONEaaaa\\nPEMBODYLINETWObbbb\\n-----END RSA PRIVATE KEY-----\\n'\n");
    script.push_str("echo all-printed\nexec sleep 600\n");
    env.write("secrets.sh", &script);
    env.write(
        "orch.yaml",
        "session: sec\nsnapshot: { redact: ['internal-[0-9]{6}'] }\nagents:\n  - { name: leaky, role: BOSS, command: 'sh secrets.sh', env: { OPENAI_API_KEY: sk-envenvenvenvenvenvenvenv0000, PLAIN: visible-value } }\n",
    );
    env.orch_ok(&["layout", "up"]);
    wait_for_output(&env, "sec", "all-printed");
    let doc_path = snapshot(&env);
    let doc = read_doc(&doc_path);
    let text = std::fs::read_to_string(&doc_path).expect("doc");
    assert!(text.contains("visible-value"), "the env is in the document");
    assert!(text.contains("[REDACTED]"));
    let b = doc.agents[0].scrollback.as_ref().expect("blob");
    let pane = String::from_utf8_lossy(&blob(&env, "sec", &b.sha256)).into_owned();
    assert!(pane.contains("key: [REDACTED]"), "{pane}");

    let mut forbidden: Vec<&str> = secrets.to_vec();
    forbidden.extend([
        "sk-envenvenvenvenvenvenvenv0000",
        "SPLITabcdefghij",
        "TAILklmnopqrstu",
        "PEMBODYLINEONE",
        "PEMBODYLINETWO",
    ]);
    let mut files = Vec::new();
    all_files(env.state.path(), &mut files);
    for f in &files {
        if f.is_file() {
            let bytes = std::fs::read(f).expect("read");
            let text = String::from_utf8_lossy(&bytes);
            for s in &forbidden {
                assert!(!text.contains(s), "{s} found in {}", f.display());
            }
        }
    }
    // Modes: every snapshot folder 0700, every file 0600.
    let mut snap_files = Vec::new();
    let snaps = session_dir(&env, "sec").join("snapshots");
    snap_files.push(snaps.clone());
    all_files(&snaps, &mut snap_files);
    for f in &snap_files {
        let mode = std::fs::metadata(f).expect("meta").permissions().mode() & 0o777;
        let want = if f.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", f.display());
    }
}

#[test]
fn fifty_snapshots_of_an_idle_session_store_each_pane_once() {
    let env = TestEnv::new();
    let yaml = support::workers("session: idle\nsnapshot: { keep: 100 }\n", 4, |i| {
        format!("seq 1 500; echo pane-{i}; exec sleep 600")
    });
    env.write("orch.yaml", &yaml);
    env.orch_ok(&["layout", "up"]);
    wait_for("every pane to finish", Duration::from_secs(20), || {
        env.panes("idle")
            .iter()
            .all(|p| {
                env.tmux(&["capture-pane", "-p", "-t", &p.id])
                    .contains("pane-")
            })
            .then_some(())
    });
    let blobs = session_dir(&env, "idle").join("snapshots/blobs");
    let count = || std::fs::read_dir(&blobs).expect("blobs").count();
    let size = |d: &Path| -> u64 {
        std::fs::read_dir(d)
            .expect("dir")
            .flatten()
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .sum()
    };
    snapshot(&env);
    let after_one = size(&blobs);
    assert_eq!(count(), 4);
    for _ in 0..49 {
        snapshot(&env);
    }
    assert_eq!(count(), 4, "idle panes are stored once");
    assert_eq!(size(&blobs), after_one);
    let listed = orch::snapshot::list(&session_dir(&env, "idle")).expect("list");
    assert_eq!(listed.len(), 50);
    assert!(listed.iter().all(|l| l.ok.is_ok()));
    // Retention: keep: 3 leaves three documents and only their blobs.
    env.write("orch.yaml", &yaml.replace("keep: 100", "keep: 3"));
    snapshot(&env);
    assert_eq!(
        orch::snapshot::list(&session_dir(&env, "idle"))
            .expect("list")
            .len(),
        3
    );
    assert_eq!(count(), 4);
}

#[test]
fn a_program_on_the_alternate_screen_gets_both_screens_captured() {
    let env = TestEnv::new();
    env.write(
        "full.sh",
        "echo before-alt\nprintf '\\033[?1049h'\necho ON-ALT-SCREEN\nexec sleep 600\n",
    );
    env.write(
        "orch.yaml",
        "session: alt\nagents:\n  - { name: tui, role: BOSS, command: 'sh full.sh' }\n  - { name: plain, role: WORKER, command: 'echo just-text; exec sleep 600' }\n",
    );
    env.orch_ok(&["layout", "up"]);
    let pane = env.pane_of("alt", "tui");
    wait_for("the alternate screen", Duration::from_secs(10), || {
        (env.tmux(&["display-message", "-p", "-t", &pane.id, "#{alternate_on}"])
            .trim()
            == "1"
            && env
                .tmux(&["capture-pane", "-p", "-t", &pane.id])
                .contains("ON-ALT-SCREEN"))
        .then_some(())
    });
    let doc = read_doc(&snapshot(&env));
    let tui = doc.agents.iter().find(|a| a.name == "tui").expect("tui");
    let alt = tui.alternate.as_ref().expect("alternate captured");
    // tmux 3.3a: on the alternate screen, `-S - -E -` returns the normal history followed
    // by the alternate screen, and `-a` returns the saved NORMAL screen (what the program
    // covered), which is in neither the history nor the visible screen.
    let alt_text = String::from_utf8_lossy(&blob(&env, "alt", &alt.sha256)).into_owned();
    assert!(alt_text.contains("before-alt"), "{alt_text}");
    assert!(!alt_text.contains("ON-ALT-SCREEN"), "{alt_text}");
    let main = tui.scrollback.as_ref().expect("scrollback");
    let main_text = String::from_utf8_lossy(&blob(&env, "alt", &main.sha256)).into_owned();
    assert!(main_text.contains("ON-ALT-SCREEN"), "{main_text}");
    let plain = doc
        .agents
        .iter()
        .find(|a| a.name == "plain")
        .expect("plain");
    assert!(plain.alternate.is_none());
}

#[test]
fn concurrent_snapshots_all_succeed_with_distinct_ids() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        "session: conc\nsnapshot: { keep: 3 }\nagents:\n  - { name: a, role: BOSS, command: 'seq 1 2000; exec sleep 600' }\n  - { name: b, role: WORKER, command: 'seq 5 2000; exec sleep 600' }\n",
    );
    env.orch_ok(&["layout", "up"]);
    wait_for_output(&env, "conc", "2000");
    let children: Vec<_> = (0..6)
        .map(|_| {
            env.orch_command(&["snapshot"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for c in children {
        let out = c.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        ids.insert(text.lines().last().expect("path").to_owned());
    }
    assert_eq!(ids.len(), 6, "{ids:?}");
    // Retention ran under the lock: 3 documents, all good, and their blobs present.
    let listed = orch::snapshot::list(&session_dir(&env, "conc")).expect("list");
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|l| l.ok.is_ok()), "{listed:?}");
}

#[test]
fn states_come_from_the_supervisor_when_one_runs_else_from_tmux() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        "session: sup\nagents:\n  - { name: steady, role: BOSS, command: 'exec sleep 600' }\n  - { name: quitter, role: WORKER, command: 'exit 3', restart: { policy: never } }\n",
    );
    env.orch_ok(&["layout", "up"]);
    let quitter = env.pane_of("sup", "quitter");
    wait_for("quitter to exit", Duration::from_secs(10), || {
        env.pane_of("sup", "quitter").dead.then_some(())
    });
    let doc = read_doc(&snapshot(&env));
    let by = |d: &Snapshot, n: &str| d.agents.iter().find(|a| a.name == n).cloned().expect(n);
    assert_eq!(by(&doc, "steady").state, "running");
    assert_eq!(by(&doc, "steady").activity, "unknown");
    let q = by(&doc, "quitter");
    assert_eq!((q.state.as_str(), q.cwd.as_deref()), ("exited", None));
    assert_eq!(q.pane.as_deref(), Some(quitter.id.as_str()));

    // With a supervisor: a crash it restarted shows in the restart count.
    let mut sup = support::Supervisor::start(&env);
    sup.expect("supervisor_started", None, Duration::from_secs(10));
    let steady = env.pane_of("sup", "steady");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(steady.pid as i32).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill");
    sup.expect("agent_restarted", Some("steady"), Duration::from_secs(10));
    let doc = read_doc(&snapshot(&env));
    let s = by(&doc, "steady");
    assert_eq!(s.restarts, 1, "{s:?}");
    assert_eq!(s.state, "running");
}

/// `text` without escape sequences (CSI and two-byte ones: what `capture-pane -e` emits).
fn plain(text: &[u8]) -> String {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == 0x1b {
            i += 1;
            if text.get(i) == Some(&b'[') {
                i += 1;
                while i < text.len() && !(0x40..=0x7e).contains(&text[i]) {
                    i += 1;
                }
            }
            i += 1;
            continue;
        }
        out.push(text[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Types `command` into the shell of `pane` and waits for `echo` of a marker after it.
fn run_in(env: &TestEnv, pane: &str, command: &str, step: u32) {
    // The marker is computed by the shell, so the typed line never shows it.
    let line = format!("{command}; echo step-$((0+{step}))-done");
    env.tmux(&["send-keys", "-t", pane, "-l", &line]);
    env.tmux(&["send-keys", "-t", pane, "Enter"]);
    let marker = format!("step-{step}-done");
    wait_for(&marker, Duration::from_secs(20), || {
        env.tmux(&["capture-pane", "-p", "-J", "-t", pane])
            .lines()
            .any(|l| l.trim_end() == marker)
            .then_some(())
    });
}

/// `capture-pane -p -e -J -S - -E -`: what a snapshot of the pane must hold.
fn whole_capture(env: &TestEnv, pane: &str) -> String {
    env.tmux(&[
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
}

/// The stored scrollback blob of a snapshot's agent.
fn scrollback(
    env: &TestEnv,
    session: &str,
    agent: &orch::snapshot::format::AgentSnapshot,
) -> Vec<u8> {
    blob(
        env,
        session,
        &agent.scrollback.as_ref().expect("scrollback").sha256,
    )
}

/// The last `snapshot_written` event in the session's journal.
fn last_written(env: &TestEnv, session: &str) -> serde_json::Value {
    let journal =
        std::fs::read_to_string(session_dir(env, session).join("events.jsonl")).expect("journal");
    journal
        .lines()
        .rev()
        .map(json)
        .find(|e| e["kind"] == "snapshot_written")
        .expect("a snapshot_written event")
}

#[test]
fn snapshots_that_read_only_new_rows_equal_a_whole_capture_whatever_the_pane_did() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        "session: inc\nsnapshot: { scrollback_lines: 2000, keep: 50 }\nagents:\n  - { name: sh, role: BOSS, command: 'PS1=\"$ \" exec sh' }\n",
    );
    env.orch_ok(&["layout", "up"]);
    let pane = env.pane_of("inc", "sh").id;
    let coloured = |from: u32, to: u32| {
        format!(
            "i={from}; while [ $i -lt {to} ]; do printf '\\033[3%dmline %d\\033[0m plain %d\\n' $((i%8)) $i $i; i=$((i+1)); done"
        )
    };
    // Each step leaves the pane idle; the snapshot after it must hold exactly what a
    // whole capture of the pane holds then.
    let steps: Vec<(String, &str)> = vec![
        (coloured(0, 800), "full"),
        (coloured(800, 1100), "appended"),
        ("echo just-the-screen".to_owned(), "appended"),
        (
            "printf '\\033[1;31mstill red at the end of a line\\n'".to_owned(),
            "appended",
        ),
        (coloured(1100, 1300), "appended"),
        // Over history-limit: tmux drops the oldest rows.
        (coloured(1300, 3500), "full"),
        ("printf '\\033[3J'; clear; seq 1 40".to_owned(), "full"),
        (coloured(3500, 3700), "appended"),
        (
            "echo a-key sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123".to_owned(),
            "appended",
        ),
    ];
    for (n, (command, how)) in steps.iter().enumerate() {
        let n = n as u32;
        run_in(&env, &pane, command, n);
        let doc = read_doc(&snapshot(&env));
        let event = last_written(&env, "inc");
        let agent = &doc.agents[0];
        let stored = scrollback(&env, "inc", agent);
        let whole = whole_capture(&env, &pane);
        let expected = whole.replace("sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123", "[REDACTED]");
        assert_eq!(
            plain(&stored),
            plain(expected.as_bytes()),
            "step {n} ({command}): the snapshot differs from a whole capture"
        );
        let appended = event["appended_panes"] == 1;
        assert_eq!(
            appended,
            *how == "appended",
            "step {n} ({command}): expected {how}, got {event}"
        );
        if n > 0 && *how == "appended" {
            let mark = agent.history_mark.as_ref().expect("mark");
            assert!(mark.rows > 0 || n < 2, "{mark:?}");
        }
    }
    // Resizing reflows the history: everything is read again.
    env.tmux(&["resize-window", "-t", &pane, "-x", "61", "-y", "20"]);
    run_in(&env, &pane, &coloured(3700, 3750), 99);
    let doc = read_doc(&snapshot(&env));
    let stored = scrollback(&env, "inc", &doc.agents[0]);
    let whole = whole_capture(&env, &pane);
    assert_eq!(
        plain(&stored),
        plain(
            whole
                .replace("sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123", "[REDACTED]")
                .as_bytes()
        )
    );
    assert_eq!(last_written(&env, "inc")["appended_panes"], 0);
}

#[test]
fn a_restored_pane_shows_its_history_then_the_screen_a_program_covered_then_the_program() {
    let env = TestEnv::new();
    env.write(
        "tui.sh",
        "if [ -f ran ]; then echo second-run; exec sleep 600; fi\ntouch ran\nseq 1 50 | sed 's/^/history /'\necho normal-screen-text\nprintf '\\033[?1049h'\necho ON-ALT-SCREEN\nexec sleep 600\n",
    );
    env.write(
        "orch.yaml",
        "session: altr\nagents:\n  - { name: tui, role: BOSS, command: 'sh tui.sh' }\n",
    );
    env.orch_ok(&["layout", "up"]);
    let pane = env.pane_of("altr", "tui");
    wait_for("the alternate screen", Duration::from_secs(10), || {
        env.tmux(&["capture-pane", "-p", "-t", &pane.id])
            .contains("ON-ALT-SCREEN")
            .then_some(())
    });
    snapshot(&env);
    env.kill_server();
    env.orch_ok(&["restore", "latest", "--no-handover"]);
    let pane = env.pane_of("altr", "tui");
    let text = wait_for(
        "the replay and the second run",
        Duration::from_secs(10),
        || {
            let text = env.tmux(&[
                "capture-pane",
                "-p",
                "-J",
                "-S",
                "-",
                "-E",
                "-",
                "-t",
                &pane.id,
            ]);
            text.contains("second-run").then_some(text)
        },
    );
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle} missing from the restored pane:\n{text}"))
    };
    assert!(at("history 1\n") < at("history 50\n"));
    assert!(at("history 50\n") < at("normal-screen-text"), "{text}");
    assert!(at("normal-screen-text") < at("ON-ALT-SCREEN"), "{text}");
    assert!(at("ON-ALT-SCREEN") < at("second-run"), "{text}");
    assert_eq!(text.matches("normal-screen-text").count(), 1, "{text}");
}

#[test]
fn snapshots_of_a_pane_that_never_stops_printing_hold_every_line_once_in_order() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        "session: busy\nsnapshot: { scrollback_lines: 50000, keep: 50 }\nagents:\n  - { name: counter, role: BOSS, command: \"i=0; while :; do echo n$i; i=$((i+1)); [ $((i % 300)) = 0 ] && sleep 0.2; done\" }\n",
    );
    env.orch_ok(&["layout", "up"]);
    let mut appended = 0;
    let mut last_count = 0;
    // Bursts of output with pauses: snapshots land in both.
    for _ in 0..20 {
        let doc = read_doc(&snapshot(&env));
        appended += last_written(&env, "busy")["appended_panes"]
            .as_u64()
            .unwrap_or(0);
        let agent = &doc.agents[0];
        let text = plain(&scrollback(&env, "busy", agent));
        let numbers: Vec<u64> = text
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix('n')?.parse().ok())
            .collect();
        last_count = numbers.len();
        let first = numbers.first().copied().unwrap_or(0);
        for (k, n) in numbers.iter().enumerate() {
            assert_eq!(
                *n,
                first + k as u64,
                "line {k} of the snapshot is out of sequence"
            );
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(last_count > 600, "the counter printed {last_count} lines");
    assert!(appended > 0, "no snapshot appended to the previous one");
}
