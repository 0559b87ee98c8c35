//! Breaks 1, 2 and 3: layouts that validated but crashed, stalled or half-built the
//! session, names that broke files and targets, and files that are not files.

use std::time::{Duration, Instant};

use super::stderr;
use super::support::{Supervisor, TestEnv, workers};

/// `orch layout validate` and `orch supervise` both refuse `yaml` with exit 2 and a
/// `FILE:LINE:COL: …` line containing `expect`, and supervise never panics (101).
fn refused(yaml: &str, expect: &str) {
    let env = TestEnv::new();
    env.write("orch.yaml", yaml);
    let out = env.orch(&["layout", "validate", "orch.yaml"]);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "validate accepted {yaml:?}: {err}"
    );
    assert!(err.contains(expect), "{yaml:?}: {err}");
    assert!(
        err.lines().all(|l| l
            .split_once("orch.yaml:")
            .is_some_and(|(_, rest)| rest.split(':').take(2).all(|n| n.parse::<u32>().is_ok()))),
        "file:line:col lines: {err}"
    );
    let out = env
        .orch_command(&["supervise"])
        .stdout(std::process::Stdio::null())
        .output()
        .expect("supervise");
    assert_eq!(out.status.code(), Some(2), "supervise: {}", stderr(&out));
    assert!(!env.session_exists("h"));
}

const HEAD: &str = "session: h\n";
const AGENT: &str = "agents:\n  - { name: a0, role: WORKER, command: 'exec sleep 600' }\n";

#[test]
fn zero_and_absurd_durations_are_refused_with_their_position() {
    for (section, expect) in [
        ("monitor: { tick: 0s }\n", "longer than zero"),
        ("monitor: { resources: 0s }\n", "longer than zero"),
        ("monitor: { maintenance: 0ms }\n", "longer than zero"),
        ("snapshot: { interval: 0s }\n", "longer than zero"),
        (
            "snapshot: { interval: 18446744073709551615s }\n",
            "at most 365 days",
        ),
        (
            "defaults: { restart: { min_uptime: 18446744073709551615s } }\n",
            "at most 365 days",
        ),
        (
            "defaults: { restart: { backoff: { initial: 1s, max: 18446744073709551615s } } }\n",
            "at most 365 days",
        ),
        ("defaults: { stall_after: 0s }\n", "longer than zero"),
        ("monitor: { tick: 400d }\n", "at most 365 days"),
    ] {
        refused(&format!("{HEAD}{section}{AGENT}"), expect);
    }
}

#[test]
fn names_too_long_or_reserved_are_refused() {
    let long = "a".repeat(5000);
    refused(
        &format!("{HEAD}agents:\n  - {{ name: {long}, role: WORKER }}\n"),
        "at most 64",
    );
    refused(
        &format!("session: {}\n{AGENT}", "s".repeat(300)),
        "at most 64",
    );
    for reserved in ["all", "user", "orch"] {
        refused(
            &format!("{HEAD}agents:\n  - {{ name: {reserved}, role: WORKER }}\n"),
            "is reserved",
        );
    }
}

#[test]
fn huge_or_deeply_nested_layouts_are_refused_before_parsing() {
    let deep = 100_000;
    let started = Instant::now();
    refused(
        &format!(
            "{HEAD}monitor: {}{}\n{AGENT}",
            "[".repeat(deep),
            "]".repeat(deep)
        ),
        "nested more than 64 levels",
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    let env = TestEnv::new();
    let mut big = format!("{HEAD}{AGENT}");
    while big.len() < (2 << 20) {
        big.push_str("# padding padding padding padding padding padding padding\n");
    }
    env.write("big.yaml", &big);
    let out = env.orch(&["layout", "validate", "big.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("larger than 1024 KiB"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_bom_is_accepted_and_a_folder_or_fifo_gets_its_own_message() {
    let env = TestEnv::new();
    env.write("bom.yaml", &format!("\u{feff}{HEAD}{AGENT}"));
    let out = env.orch(&["layout", "validate", "bom.yaml"]);
    assert!(out.status.success(), "BOM: {}", stderr(&out));

    std::fs::create_dir(env.path().join("adir")).expect("mkdir");
    let out = env.orch(&["--layout", "adir", "status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is a directory"), "{}", stderr(&out));

    let fifo = env.path().join("fifo.yaml");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
    let started = Instant::now();
    let out = env.orch(&["--layout", "fifo.yaml", "status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is a FIFO"), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a FIFO must not block"
    );
}

#[test]
fn a_layout_too_big_for_its_window_leaves_no_pane_behind() {
    let env = TestEnv::new();
    // More than fit (about 840 at 240x60, tiled), fewer than the quick estimate refuses.
    env.write(
        "orch.yaml",
        &workers(HEAD, 1000, |_| "exec sleep 600".into()),
    );
    let out = env.orch(&["layout", "up"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("no room"), "{err}");
    assert!(
        err.lines().count() == 1 && err.len() < 600,
        "one readable line: {err}"
    );
    assert!(
        !env.session_exists("h"),
        "the half-made session was removed"
    );
    assert_eq!(env.tmux(&["list-panes", "-a"]).lines().count(), 0);

    // Far too many: refused before anything is created.
    env.write(
        "orch.yaml",
        &workers(HEAD, 10_000, |_| "exec sleep 600".into()),
    );
    let out = env.orch(&["layout", "up"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("do not fit"), "{}", stderr(&out));
    assert!(!env.session_exists("h"));
    assert_eq!(env.tmux(&["list-panes", "-a"]).lines().count(), 0);
    // Nothing made for its agents either (it once wrote 10,000 transcript files, in
    // seconds, before it refused).
    let transcripts = env.state.path().join("h/transcripts");
    assert!(!transcripts.join("a9999.log").exists());
    assert!(!transcripts.join("a1000.log").exists());
}

#[test]
fn a_changed_command_is_said_to_apply_at_the_next_restart() {
    let env = TestEnv::new();
    let path = env.write("orch.yaml", &format!("{HEAD}{AGENT}"));
    let mut sup = Supervisor::start(&env);
    sup.expect("agent_started", Some("a0"), Duration::from_secs(10));
    std::fs::write(
        &path,
        format!("{HEAD}agents:\n  - {{ name: a0, role: WORKER, command: 'exec sleep 700' }}\n"),
    )
    .expect("write");
    let ev = sup.expect("config_reloaded", None, Duration::from_secs(10));
    assert_eq!(ev["changed"], serde_json::json!(["a0"]));
    assert_eq!(ev["applies_at_restart"], serde_json::json!(["a0"]), "{ev}");
    assert!(
        ev["note"]
            .as_str()
            .is_some_and(|n| n.contains("next restart")),
        "{ev}"
    );
}

#[test]
fn a_hostile_layout_written_over_a_running_supervisor_does_not_delay_a_death() {
    let env = TestEnv::new();
    let path = env.write("orch.yaml", &format!("{HEAD}{AGENT}"));
    let mut sup = Supervisor::start(&env);
    let started = sup.expect("agent_started", Some("a0"), Duration::from_secs(10));
    let pid = started["pid"].as_u64().expect("pid") as i32;
    let deep = 200_000;
    std::fs::write(
        &path,
        format!(
            "{HEAD}monitor: {}{}\n{AGENT}",
            "[".repeat(deep),
            "]".repeat(deep)
        ),
    )
    .expect("write");
    std::thread::sleep(Duration::from_millis(100));
    let killed = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill");
    sup.expect("agent_exited", Some("a0"), Duration::from_secs(30));
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "the death was noticed after {:?}",
        killed.elapsed()
    );
    let seen = sup
        .seen
        .iter()
        .find(|e| e["kind"] == "config_rejected")
        .cloned();
    let rejected =
        seen.unwrap_or_else(|| sup.expect("config_rejected", None, Duration::from_secs(10)));
    assert!(
        rejected.to_string().contains("nested more than"),
        "{rejected}"
    );
}
