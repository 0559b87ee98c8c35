//! Agent transcripts on a real tmux server: one writer process per session takes every
//! pane's pipe, keeps each pane's lines in its own file, comes back when killed, and goes
//! away with the tmux server.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{Supervisor, TestEnv, wait_for};

/// Processes whose first argument is `subcommand` and whose arguments name `state`.
fn orch_processes(subcommand: &str, state: &Path) -> Vec<u32> {
    let state = state.canonicalize().unwrap_or_else(|_| state.to_owned());
    let state = state.to_string_lossy();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.get(1).map(String::as_str) == Some(subcommand)
            && args.iter().any(|a| a.contains(state.as_ref()))
        {
            found.push(pid);
        }
    }
    found
}

fn writers(env: &TestEnv) -> Vec<u32> {
    orch_processes("transcript-writer", env.state.path())
}

fn transcript(env: &TestEnv, session: &str, agent: &str) -> PathBuf {
    env.state
        .path()
        .join(session)
        .join("transcripts")
        .join(format!("{agent}.log"))
}

/// The transcript's lines without the terminal's carriage returns.
fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect()
}

/// Kills the test's tmux server and waits for the writer to notice its pipes closed and
/// exit on its own: no test leaves a writer behind.
fn writer_exits_with_the_server(env: &TestEnv) {
    env.kill_server();
    wait_for(
        "the transcript writer to exit after the tmux server",
        Duration::from_secs(15),
        || writers(env).is_empty().then_some(()),
    );
    let dir = env.state.path().join("tw/transcripts");
    assert!(
        !dir.join(".writer.sock").exists(),
        "a writer that exits cleanly removes its socket"
    );
}

#[test]
fn nine_agents_share_one_writer_and_it_leaves_with_the_server() {
    let env = TestEnv::new();
    let yaml = support::workers("session: tw\n", 9, |_| {
        "echo \"hello from $ORCH_AGENT\"; exec sleep 600".to_owned()
    });
    env.write("orch.yaml", &yaml);
    env.orch_ok(&["layout", "up"]);
    for i in 0..9 {
        let agent = format!("a{i}");
        let file = transcript(&env, "tw", &agent);
        let want = format!("hello from {agent}");
        wait_for(
            &format!("{agent}'s transcript"),
            Duration::from_secs(10),
            || lines(&file).contains(&want).then_some(()),
        );
        let text = lines(&file).join("\n");
        assert_eq!(text.matches("hello from").count(), 1, "{agent}: {text}");
    }
    // The pipe children hand over and exit; only the writer stays.
    wait_for("the pipe children to exit", Duration::from_secs(10), || {
        orch_processes("transcript", env.state.path())
            .is_empty()
            .then_some(())
    });
    assert_eq!(writers(&env).len(), 1, "one writer for the session");
    writer_exits_with_the_server(&env);
}

#[test]
fn concurrent_panes_keep_their_own_lines_in_order() {
    const N: usize = 3000;
    let env = TestEnv::new();
    let count = format!(
        "i=0; while [ $i -lt {N} ]; do i=$((i+1)); echo \"$ORCH_AGENT $i\"; done; exec sleep 600"
    );
    env.write(
        "orch.yaml",
        &format!(
            "session: tw\nagents:\n  - {{ name: left, role: R, command: '{count}' }}\n  - {{ name: right, role: R, command: '{count}' }}\n"
        ),
    );
    env.orch_ok(&["layout", "up"]);
    for agent in ["left", "right"] {
        let file = transcript(&env, "tw", agent);
        let last = format!("{agent} {N}");
        wait_for(
            &format!("{agent}'s last line"),
            Duration::from_secs(30),
            || lines(&file).contains(&last).then_some(()),
        );
        let want: Vec<String> = (1..=N).map(|i| format!("{agent} {i}")).collect();
        assert_eq!(
            lines(&file),
            want,
            "{agent}: only its own lines, all, in order"
        );
    }
    writer_exits_with_the_server(&env);
}

#[test]
fn a_killed_writer_is_replaced_and_panes_are_piped_again() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        concat!(
            "session: tw\nagents:\n",
            "  - { name: talky, role: R, command: 'while true; do echo \"tick $(date +%s%N)\"; sleep 0.2; done' }\n",
            "  - { name: quiet, role: R, command: 'read line; echo \"got $line\"; exec sleep 600' }\n",
        ),
    );
    let mut sup = Supervisor::start(&env);
    sup.expect("agent_started", Some("talky"), Duration::from_secs(15));
    let talky = transcript(&env, "tw", "talky");
    wait_for("talky's first tick", Duration::from_secs(10), || {
        lines(&talky)
            .iter()
            .any(|l| l.starts_with("tick "))
            .then_some(())
    });
    let old = wait_for("one writer", Duration::from_secs(10), || {
        let w = writers(&env);
        (w.len() == 1).then(|| w[0])
    });
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(old as i32).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill the writer");
    let killed_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let started = Instant::now();
    // A pane that prints all the time, and one that prints nothing until asked: both get
    // their pipe back.
    wait_for(
        "a tick printed after the kill in talky's transcript",
        Duration::from_secs(10),
        || {
            lines(&talky)
                .iter()
                .filter_map(|l| l.strip_prefix("tick ")?.parse::<u128>().ok())
                .any(|t| t > killed_at)
                .then_some(())
        },
    );
    let new = writers(&env);
    assert!(
        new.len() == 1 && new[0] != old,
        "a new writer replaced the killed one: {new:?}"
    );
    // tmux would notice quiet's dead pipe only when it printed, losing that output: the
    // supervisor has already piped it again because the writer died.
    let quiet_pane = env.pane_of("tw", "quiet").id;
    env.tmux(&["send-keys", "-t", &quiet_pane, "-l", "marker-after-kill"]);
    env.tmux(&["send-keys", "-t", &quiet_pane, "Enter"]);
    let quiet = transcript(&env, "tw", "quiet");
    wait_for(
        "quiet's output after the kill",
        Duration::from_secs(10),
        || {
            lines(&quiet)
                .contains(&"got marker-after-kill".to_owned())
                .then_some(())
        },
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    wait_for(
        "the re-attach in the session log",
        Duration::from_secs(5),
        || {
            let logs = std::fs::read_dir(env.state.path().join("tw")).ok()?;
            logs.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("orch."))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .any(|t| t.contains("transcripts re-attached"))
                .then_some(())
        },
    );
    drop(sup);
    writer_exits_with_the_server(&env);
}
