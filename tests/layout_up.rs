//! `orch layout up` on a real tmux server.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::{TestEnv, wait_for};

const AGENTS: [(&str, &str); 9] = [
    ("president", "PRESIDENT"),
    ("boss1", "BOSS"),
    ("boss2", "BOSS"),
    ("worker1", "WORKER"),
    ("worker2", "WORKER"),
    ("worker3", "WORKER"),
    ("worker4", "WORKER"),
    ("worker5", "WORKER"),
    ("worker6", "WORKER"),
];

/// A 9-agent layout whose agents write their environment and cwd to `out/` and then wait.
fn reporting_layout(env: &TestEnv) -> std::path::PathBuf {
    let out = env.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir out");
    std::fs::create_dir_all(env.path().join("work/special")).expect("mkdir");
    let mut yaml = format!(
        "session: team\nroot: work\nwindow: crew\ndefaults:\n  command: 'env > \"$OUT/$ORCH_AGENT.env\"; pwd > \"$OUT/$ORCH_AGENT.pwd\"; exec sleep 600'\n  env: {{ OUT: '{}', SHARED: from-defaults }}\nsnapshot: {{ scrollback_lines: 4321 }}\nagents:\n",
        out.display()
    );
    for (name, role) in AGENTS {
        let extra = match name {
            "boss2" => ", cwd: special, env: { SHARED: own }",
            _ => "",
        };
        yaml.push_str(&format!("  - {{ name: {name}, role: {role}{extra} }}\n"));
    }
    env.write("orch.yaml", &yaml);
    out
}

fn read_env(out: &std::path::Path, agent: &str) -> std::collections::BTreeMap<String, String> {
    let path = out.join(format!("{agent}.env"));
    let text = wait_for(
        &format!("{agent} to report its environment"),
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&path)
                .ok()
                .filter(|t| t.contains("ORCH_AGENT=") && t.ends_with('\n'))
        },
    );
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn up_builds_nine_named_panes_with_cwd_and_environment() {
    let env = TestEnv::new();
    let out = reporting_layout(&env);
    let stdout = env.orch_ok(&["layout", "up"]);
    assert_eq!(
        stdout.trim(),
        format!("session team up: 9 agents on tmux socket {}", env.socket)
    );

    let panes = env.panes("team");
    assert_eq!(
        panes.len(),
        9,
        "exactly the agents' panes, no leftover boot window: {panes:?}"
    );
    let names: Vec<&str> = panes.iter().map(|p| p.agent.as_str()).collect();
    assert_eq!(names, AGENTS.map(|(n, _)| n));
    for (p, (name, role)) in panes.iter().zip(AGENTS) {
        assert_eq!(p.role, role);
        assert_eq!(p.title, name);
    }
    // One window, named as the layout says, in a 3x3 grid.
    assert_eq!(
        env.tmux(&["list-windows", "-t", "=team", "-F", "#{window_name}"])
            .trim(),
        "crew"
    );
    let geometry = env.tmux(&[
        "list-panes",
        "-t",
        "=team:crew",
        "-F",
        "#{pane_left} #{pane_top}",
    ]);
    let lefts: BTreeSet<&str> = geometry
        .lines()
        .filter_map(|l| l.split(' ').next())
        .collect();
    let tops: BTreeSet<&str> = geometry
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .collect();
    assert_eq!((lefts.len(), tops.len()), (3, 3), "a 3x3 grid: {geometry}");
    // Options orch relies on were in force when the panes were made.
    let opts = env.tmux(&[
        "list-panes",
        "-t",
        "=team:crew",
        "-F",
        "#{history_limit} #{remain-on-exit}",
    ]);
    for line in opts.lines() {
        assert_eq!(line, "4321 on");
    }

    let work = env.path().join("work");
    for (name, role) in AGENTS {
        let vars = read_env(&out, name);
        assert_eq!(vars.get("ORCH_SESSION").map(String::as_str), Some("team"));
        assert_eq!(vars.get("ORCH_AGENT").map(String::as_str), Some(name));
        assert_eq!(vars.get("ORCH_ROLE").map(String::as_str), Some(role));
        assert_eq!(vars.get("ORCH_SOCKET"), Some(&env.socket));
        assert_eq!(
            vars.get("ORCH_STATE_DIR").map(String::as_str),
            env.state.path().to_str()
        );
        let shared = if name == "boss2" {
            "own"
        } else {
            "from-defaults"
        };
        assert_eq!(vars.get("SHARED").map(String::as_str), Some(shared));
        // Written after the environment: wait for it whole too.
        let pwd = wait_for(&format!("{name}'s cwd"), Duration::from_secs(10), || {
            std::fs::read_to_string(out.join(format!("{name}.pwd")))
                .ok()
                .filter(|p| p.ends_with('\n'))
        });
        let expected = if name == "boss2" {
            work.join("special")
        } else {
            work.clone()
        };
        assert_eq!(
            pwd.trim(),
            expected.to_str().expect("utf-8 path"),
            "cwd of {name}"
        );
    }
}

#[test]
fn up_twice_changes_nothing_and_a_killed_pane_is_recreated_alone() {
    let env = TestEnv::new();
    reporting_layout(&env);
    env.orch_ok(&["layout", "up"]);
    let before = env.panes("team");

    let stdout = env.orch_ok(&["layout", "up"]);
    assert_eq!(stdout.trim(), "session team already up (9 agents)");
    assert_eq!(env.panes("team"), before, "a second up touches nothing");

    let victim = env.pane_of("team", "worker3");
    env.tmux(&["kill-pane", "-t", &victim.id]);
    let stdout = env.orch_ok(&["layout", "up"]);
    assert_eq!(
        stdout.trim(),
        "session team: created 1 missing pane(s): worker3"
    );
    let after = env.panes("team");
    assert_eq!(after.len(), 9);
    for p in &before {
        if p.agent != "worker3" {
            assert!(after.contains(p), "{} was left alone", p.agent);
        }
    }
    let reborn = env.pane_of("team", "worker3");
    assert_ne!(reborn.id, victim.id);
    assert_eq!(reborn.role, "WORKER");
}

#[test]
fn a_killed_window_is_recreated_in_the_existing_session() {
    let env = TestEnv::new();
    reporting_layout(&env);
    env.orch_ok(&["layout", "up"]);
    // Keep the session alive with another window, then remove the agents' window.
    env.tmux(&[
        "new-window",
        "-d",
        "-t",
        "=team:",
        "-n",
        "editor",
        "sleep 600",
    ]);
    env.tmux(&["kill-window", "-t", "=team:crew"]);
    assert!(env.panes("team").iter().all(|p| p.agent.is_empty()));
    let stdout = env.orch_ok(&["layout", "up"]);
    assert_eq!(
        stdout.trim(),
        format!("session team up: 9 agents on tmux socket {}", env.socket)
    );
    let agents: Vec<String> = env
        .panes("team")
        .into_iter()
        .map(|p| p.agent)
        .filter(|a| !a.is_empty())
        .collect();
    assert_eq!(agents, AGENTS.map(|(n, _)| n.to_owned()));
}

#[test]
fn commands_and_env_with_metacharacters_reach_the_agent_intact() {
    let env = TestEnv::new();
    let out = env.path().join("marker");
    // tmux ends a command at any argument ending in ';' unless it is escaped; quotes and $
    // must reach the shell untouched.
    env.write(
        "orch.yaml",
        &format!(
            "session: meta\nagents:\n  - name: a\n    role: WORKER\n    env: {{ LIST: 'a;b;', QUOTED: \"it's $HOME\" }}\n    command: \"printf '%s|' \\\"$LIST\\\" \\\"$QUOTED\\\" '$HOME;x' > {}; exec sleep 600;\"\n",
            out.display()
        ),
    );
    env.orch_ok(&["layout", "up"]);
    let text = wait_for("the marker file", Duration::from_secs(10), || {
        std::fs::read_to_string(&out).ok().filter(|t| !t.is_empty())
    });
    assert_eq!(text, "a;b;|it's $HOME|$HOME;x|");
    assert!(!env.pane_of("meta", "a").dead);
}

#[test]
fn worktree_agents_get_their_own_checkout_and_keep_it() {
    let env = TestEnv::new();
    let repo = env.path();
    let git = |args: &[&str]| support::git_as(&env, repo, "t", args);
    git(&["init", "-q", "-b", "main"]);
    env.write("README", "hello\n");
    env.write(".gitignore", ".env\nout/\norch.yaml\n");
    git(&["add", "README", ".gitignore"]);
    git(&["commit", "-q", "-m", "first"]);
    env.write(".env", "SECRET=1\n");
    let out = env.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    env.write(
        "orch.yaml",
        &format!(
            "session: wt\ndefaults:\n  command: 'pwd > {}/$ORCH_AGENT.pwd; exec sleep 600'\nagents:\n  - {{ name: boss1, role: BOSS }}\n  - {{ name: worker1, role: WORKER, worktree: {{ copy: [.env, missing.txt] }} }}\n",
            out.display()
        ),
    );
    let stdout = env.orch_ok(&["layout", "up"]);
    let dest = env.state.path().join("wt/worktrees/worker1");
    assert!(
        stdout.contains(&format!(
            "worker1: new git worktree on branch orch/worker1 at {}",
            dest.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "worker1: missing.txt does not exist, so it was not copied into the worktree"
        ),
        "{stdout}"
    );

    let pwd = wait_for("worker1's cwd", Duration::from_secs(10), || {
        // Whole: the shell creates the file before `pwd` writes to it.
        std::fs::read_to_string(out.join("worker1.pwd"))
            .ok()
            .filter(|p| p.ends_with('\n'))
    });
    assert_eq!(pwd.trim(), dest.to_str().expect("utf-8"));
    let boss_pwd = wait_for("boss1's cwd", Duration::from_secs(10), || {
        // Whole: the shell creates the file before `pwd` writes to it.
        std::fs::read_to_string(out.join("boss1.pwd"))
            .ok()
            .filter(|p| p.ends_with('\n'))
    });
    assert_eq!(
        boss_pwd.trim(),
        repo.to_str().expect("utf-8"),
        "agents without worktree stay in root"
    );
    let branch = std::process::Command::new("git")
        .args(["branch", "--show-current"])
        .current_dir(&dest)
        .output()
        .expect("git");
    assert_eq!(
        String::from_utf8_lossy(&branch.stdout).trim(),
        "orch/worker1"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join(".env")).expect(".env copied"),
        "SECRET=1\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("README")).expect("checkout"),
        "hello\n"
    );

    // The agent's own edits survive a re-up: the worktree is reused, .env not overwritten.
    std::fs::write(dest.join(".env"), "SECRET=changed\n").expect("write");
    std::fs::write(dest.join("work.txt"), "in progress\n").expect("write");
    env.tmux(&["kill-pane", "-t", &env.pane_of("wt", "worker1").id]);
    std::fs::remove_file(out.join("worker1.pwd")).expect("rm");
    let stdout = env.orch_ok(&["layout", "up"]);
    assert!(!stdout.contains("new git worktree"), "{stdout}");
    let pwd = wait_for("worker1's cwd again", Duration::from_secs(10), || {
        // Whole: the shell creates the file before `pwd` writes to it.
        std::fs::read_to_string(out.join("worker1.pwd"))
            .ok()
            .filter(|p| p.ends_with('\n'))
    });
    assert_eq!(pwd.trim(), dest.to_str().expect("utf-8"));
    assert_eq!(
        std::fs::read_to_string(dest.join(".env")).expect(".env"),
        "SECRET=changed\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("work.txt")).expect("work"),
        "in progress\n"
    );
    assert_eq!(git(&["worktree", "list"]).lines().count(), 2);
}

#[test]
fn attach_shows_the_session_and_switches_the_client_from_inside_tmux() {
    // The "user" is a client on another private server, whose pane runs `orch layout up
    // --attach`; orch must leave that client attached to the new session.
    let env = TestEnv::new();
    let outer = TestEnv::new();
    env.write(
        "orch.yaml",
        "session: shown\nagents:\n  - { name: a, role: BOSS, command: sh }\n",
    );
    env.write(
        "other.yaml",
        "session: other\nagents:\n  - { name: b, role: BOSS, command: 'exec sleep 600' }\n",
    );
    let orch = env!("CARGO_BIN_EXE_orch");
    let script = format!(
        "cd '{}' && ORCH_STATE_DIR='{}' exec '{orch}' --socket '{}' layout up --attach",
        env.path().display(),
        env.state.path().display(),
        env.socket
    );
    outer.tmux(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        "user",
        "-x",
        "120",
        "-y",
        "40",
        &script,
    ]);
    // The user's client: `layout up` also started a supervisor, whose control-mode
    // client is listed too.
    let client_session = || {
        env.tmux(&[
            "list-clients",
            "-F",
            "#{client_control_mode} #{client_session}",
        ])
        .lines()
        .filter_map(|l| l.strip_prefix("0 "))
        .collect::<Vec<_>>()
        .join(",")
    };
    wait_for(
        "a client attached to the session",
        Duration::from_secs(10),
        || Some(client_session()).filter(|c| !c.is_empty()),
    );
    assert_eq!(client_session(), "shown");

    // Inside a pane of that server, with no flags (ORCH_* come from the pane), --attach
    // switches the client instead of nesting a second one.
    let pane = env.pane_of("shown", "a").id;
    env.tmux(&[
        "send-keys",
        "-t",
        &pane,
        "-l",
        &format!("'{orch}' --layout other.yaml layout up --attach\n"),
    ]);
    wait_for(
        "the client to switch to the other session",
        Duration::from_secs(10),
        || (client_session() == "other").then_some(()),
    );
    assert_eq!(client_session(), "other", "switched, not nested");
}

/// Gemini CLI runs headless, and exits, whenever `CI=true` or `GITHUB_ACTIONS=true`: its
/// profile clears both in its pane, up and restored; the agent's own `env` still wins and
/// other agents keep what orch was started with.
#[test]
fn a_gemini_agent_started_under_a_ci_runner_is_not_told_it_is_in_ci() {
    let env = TestEnv::new();
    let out = env.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir out");
    env.write(
        "orch.yaml",
        &format!(
            "session: ci\ndefaults:\n  command: 'env > \"$OUT/$ORCH_AGENT.env\"; exec sleep 600'\n  env: {{ OUT: '{}' }}\nagents:\n  - {{ name: gemini, role: WORKER, profile: gemini }}\n  - {{ name: pinned, role: WORKER, profile: gemini, env: {{ CI: 'true' }} }}\n  - {{ name: shell, role: WORKER }}\n",
            out.display()
        ),
    );
    let under_ci = |args: &[&str]| {
        let output = env
            .orch_command(args)
            .env("CI", "true")
            .env("GITHUB_ACTIONS", "true")
            .output()
            .expect("run orch");
        support::succeeded(args, &output)
    };
    let check = |when: &str| {
        for (agent, ci, actions) in [
            ("gemini", "", ""),
            ("pinned", "true", ""),
            ("shell", "true", "true"),
        ] {
            let vars = read_env(&out, agent);
            assert_eq!(
                (vars.get("CI"), vars.get("GITHUB_ACTIONS")),
                (Some(&ci.to_owned()), Some(&actions.to_owned())),
                "{agent}, {when}"
            );
        }
    };
    under_ci(&["layout", "up"]);
    check("after layout up");

    under_ci(&["snapshot"]);
    env.kill_server();
    for agent in ["gemini", "pinned", "shell"] {
        std::fs::remove_file(out.join(format!("{agent}.env"))).expect("rm");
    }
    under_ci(&["restore", "latest", "--no-handover"]);
    check("after restore");
}
