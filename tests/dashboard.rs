//! The dashboard as a person sees it: `orch` runs in a pane of a separate "viewer" tmux
//! server (a terminal we can type into and read), the organisation on the test's own
//! socket; keys go in with `send-keys`, the screen comes back with `capture-pane`.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{ORGANISATION as NAMES, TestEnv, alive, poll, wait_for};

/// A terminal: one pane of its own tmux server, running a shell.
struct Viewer {
    socket: String,
}

impl Viewer {
    fn start(env: &TestEnv, name: &str, width: u16, height: u16) -> Viewer {
        let viewer = Viewer {
            socket: format!("{}-{name}", env.socket),
        };
        let status = viewer
            .command(&[
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "v",
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
                "bash",
                "--norc",
                "--noprofile",
            ])
            .env("PS1", "viewer$ ")
            .env("HOME", env.home.path())
            .env("ORCH_STATE_DIR", env.state.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("TERM", "xterm-256color")
            .env("RUST_BACKTRACE", "0")
            .env_remove("ORCH_LAYOUT")
            .env_remove("ORCH_SOCKET")
            .env_remove("ORCH_NO_SUPERVISE")
            .env_remove("NO_COLOR")
            .env_remove("TMUX")
            .current_dir(env.path())
            .status()
            .expect("tmux");
        assert!(status.success(), "the viewer's tmux server did not start");
        viewer
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-L")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `line` at the shell and presses Enter.
    fn type_line(&self, line: &str) {
        self.tmux(&["send-keys", "-t", "v", "-l", line]);
        self.tmux(&["send-keys", "-t", "v", "Enter"]);
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "v"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    fn text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "v", "-l", text]);
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "v"])
    }

    fn wait(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        poll(Duration::from_secs(20), || {
            last = self.screen();
            f(&last).then(|| last.clone())
        })
        .unwrap_or_else(|| panic!("timed out waiting for {what}; the screen:\n{last}"))
    }

    fn format(&self, f: &str) -> String {
        self.tmux(&["display-message", "-p", "-t", "v", f])
            .trim()
            .to_owned()
    }

    /// The terminal is in cooked mode (it echoes and reads lines), as the shell wants it:
    /// `stty -a`, run at the prompt, says so (its answer goes to a file in `dir`).
    fn assert_cooked(&self, dir: &Path) {
        let file = dir.join("stty.txt");
        let _ = std::fs::remove_file(&file);
        self.type_line(&format!("stty -a > '{}'", file.display()));
        let stty = wait_for("stty's answer", Duration::from_secs(10), || {
            std::fs::read_to_string(&file)
                .ok()
                .filter(|s| !s.is_empty())
        });
        let flags: Vec<&str> = stty.split_whitespace().collect();
        for flag in ["icanon", "echo", "isig", "icrnl", "opost"] {
            assert!(flags.contains(&flag), "{flag} is off:\n{stty}");
        }
    }

    /// Runs the dashboard at the shell prompt.
    fn dashboard(&self, env: &TestEnv, extra: &str) {
        self.wait("the shell prompt", |s| s.contains("viewer$"));
        self.type_line(&format!(
            "{extra}'{}' --socket {}",
            env!("CARGO_BIN_EXE_orch"),
            env.socket
        ));
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.command(&["kill-server"]).status();
        let uid = rustix::process::getuid().as_raw();
        let dir = std::env::var_os("TMUX_TMPDIR").map_or_else(
            || std::path::PathBuf::from("/tmp"),
            std::path::PathBuf::from,
        );
        let _ = std::fs::remove_file(dir.join(format!("tmux-{uid}")).join(&self.socket));
    }
}

fn git(env: &TestEnv, args: &[&str]) -> String {
    support::git_as(env, env.path(), "worker1", args)
}

/// Nine agent-sims (worker6 is never restarted) in a repository whose gate waits for a
/// human before any rollback.
fn org9(env: &TestEnv) {
    git(env, &["init", "-q", "-b", "main"]);
    env.write(".gitignore", "orch.yaml\n");
    env.write("src/a.txt", "fine\n");
    git(env, &["add", "."]);
    git(env, &["commit", "-q", "-m", "base"]);
    let sim = format!(
        "'{}' agent-sim --profile codex --idle-after 300ms",
        env!("CARGO_BIN_EXE_orch")
    );
    let mut yaml = format!(
        "session: dash\nmonitor: {{ tick: 200ms }}\nsnapshot: {{ interval: 1h }}\n\
         quality: {{ check: 'if grep -q BROKEN src/a.txt; then echo a.txt is BROKEN; exit 1; fi', timeout: 30s, retries: 0 }}\n\
         rollback: {{ auto_max_risk: none }}\n\
         defaults: {{ profile: codex, command: \"{sim}\" }}\nagents:\n"
    );
    for (i, name) in NAMES.iter().enumerate() {
        let role = match i {
            0 => "PRESIDENT",
            1 | 2 => "BOSS",
            _ => "WORKER",
        };
        let restart = if *name == "worker6" {
            ", restart: { policy: never }"
        } else {
            ""
        };
        yaml.push_str(&format!("  - {{ name: {name}, role: {role}{restart} }}\n"));
    }
    env.write("orch.yaml", &yaml);
}

fn supervisor_of(env: &TestEnv) -> Option<u32> {
    std::fs::read_to_string(env.state.path().join("dash").join("supervisor.lock"))
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|pid| alive(*pid))
}

/// The card of `agent` on a captured screen: its six rows, in its column. A card's
/// title is its name followed by its role (upper case), which tells it from the
/// preview's title.
fn card_col(screen: &str, agent: &str) -> String {
    let needle = format!(" {agent} ");
    let lines: Vec<&str> = screen.lines().collect();
    let found = lines.iter().enumerate().find_map(|(i, l)| {
        l.match_indices(&needle)
            .find(|(at, _)| {
                l[at + needle.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_uppercase())
            })
            .map(|(at, _)| (i, l[..at].chars().count()))
    });
    let Some((top, col)) = found else {
        return String::new();
    };
    // The card starts at its corner, a column or three left of the name ("┌ ! name").
    let from = col.saturating_sub(3);
    lines[top..(top + 6).min(lines.len())]
        .iter()
        .map(|l| l.chars().skip(from).take(26).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_dashboard_runs_the_organisation_from_the_keyboard() {
    let env = TestEnv::new();
    org9(&env);
    let viewer = Viewer::start(&env, "viewer", 160, 45);
    viewer.dashboard(&env, "");

    // It brings the session up, starts the supervisor, and shows the nine agents.
    // (A capture can catch a frame half drawn: each wait is for the whole of what it
    // looks for.)
    viewer.wait("the nine agents", |s| {
        NAMES.iter().all(|n| s.contains(n)) && s.contains("supervisor ") && s.contains("agents (9)")
    });
    let supervisor = wait_for("the background supervisor", Duration::from_secs(10), || {
        supervisor_of(&env)
    });
    assert!(env.session_exists("dash"));
    viewer.wait("the agents running", |s| {
        NAMES.iter().all(|n| card_col(s, n).contains("running"))
    });

    // An agent killed: its card says so (the supervisor noticed, the subscription
    // carried it, the dashboard redrew).
    let worker6 = env.pane_of("dash", "worker6").pid;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(worker6 as i32).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill worker6");
    // In the events panel too, and `exited` sorts before the running agents: worker6's
    // card is in the first row.
    viewer.wait(
        "worker6's card to show it exited, first, and the event",
        |s| {
            card_col(s, "worker6").contains("exited")
                && s.contains("agent_exited")
                && s.lines().nth(2).is_some_and(|row| row.contains("worker6"))
        },
    );

    // `?` shows the help, any key closes it.
    viewer.keys(&["?"]);
    viewer.wait("the help", |s| s.contains("keys (any key closes)"));
    viewer.keys(&["Escape"]);
    viewer.wait("the help closed", |s| !s.contains("keys (any key closes)"));

    // `m` to the selected agent: still the president (the first at the start; the
    // selection follows the agent when the order changes).
    viewer.wait("president selected", |s| s.contains("┏ president"));
    viewer.keys(&["m"]);
    viewer.wait("the message line", |s| s.contains("message to president"));
    viewer.text("status; then \"report\" $HOME");
    viewer.keys(&["Enter"]);
    viewer.wait("the delivery", |s| {
        s.contains("message delivered to president")
    });
    let pane = env.pane_of("dash", "president").id;
    wait_for(
        "the message in the president's pane",
        Duration::from_secs(10),
        || {
            env.tmux(&["capture-pane", "-p", "-J", "-t", &pane])
                .contains("received: status; then \"report\" $HOME")
                .then_some(())
        },
    );

    // A bad commit: the gate proposes a rollback that waits for the human; `y` runs it.
    env.write("src/a.txt", "BROKEN\n");
    git(
        &env,
        &[
            "commit",
            "-q",
            "-am",
            "worker1 breaks a\n\nOrch-Agent: worker1",
        ],
    );
    // (A capture can catch a frame half drawn: wait for the whole prompt.)
    viewer.wait("the rollback prompt: commit, files, failing output", |s| {
        s.contains("y approve")
            && s.contains("worker1 breaks a")
            && s.contains("src/a.txt  +1 -1")
            && s.contains("a.txt is BROKEN")
            && s.contains("1 rollback")
    });
    // The agents' own session says so too.
    wait_for("the tmux status line", Duration::from_secs(10), || {
        let status = env.tmux(&["display-message", "-p", "-t", "=dash:", "#{E:status-right}"]);
        status.contains("1 rollback").then_some(())
    });
    viewer.keys(&["y"]);
    viewer.wait("the rollback executed", |s| s.contains("executed"));
    wait_for("main rolled back", Duration::from_secs(30), || {
        (git(&env, &["show", "main:src/a.txt"]) == "fine").then_some(())
    });
    viewer.wait("the prompt gone", |s| !s.contains("y approve"));

    // A second dashboard (another terminal) on the same session sees the same states.
    let second = Viewer::start(&env, "viewer2", 160, 45);
    second.dashboard(&env, "");
    let other = second.wait("the second dashboard", |s| {
        NAMES.iter().all(|n| s.contains(n)) && card_col(s, "worker6").contains("exited")
    });
    assert!(
        other.contains(&format!("supervisor {supervisor}")),
        "the same supervisor:\n{other}"
    );
    for name in NAMES {
        let state = |s: &str| {
            let c = card_col(s, name);
            ["running", "exited"]
                .into_iter()
                .find(|st| c.contains(st))
                .unwrap_or("?")
                .to_owned()
        };
        assert_eq!(state(&viewer.screen()), state(&other), "{name}");
    }
    second.keys(&["q"]);
    second.wait("the second one quit", |s| !s.contains("agents (9)"));

    // Enter: into the selected agent's pane; back when the user detaches.
    viewer.keys(&["Enter"]);
    let attached = viewer.wait("the president's pane", |s| {
        !s.contains("agents (9)") && s.contains("received:")
    });
    assert!(attached.contains("orch:"), "the status line:\n{attached}");
    env.tmux(&["detach-client", "-s", "dash"]);
    viewer.wait("the dashboard again", |s| s.contains("agents (9)"));
    viewer.wait("the status bar", |s| s.contains("back from the pane"));

    // `q`: the dashboard ends, the shell has its screen back, supervision goes on.
    viewer.keys(&["q"]);
    let screen = viewer.wait("the shell again", |s| {
        !s.contains("agents (9)") && s.trim_end().ends_with("viewer$")
    });
    assert_eq!(viewer.format("#{alternate_on}"), "0", "{screen}");
    assert_eq!(
        supervisor_of(&env),
        Some(supervisor),
        "the supervisor runs on"
    );
    let panes = env.panes("dash");
    assert_eq!(panes.len(), 9, "the agents run on");
    // Still supervised: a killed agent comes back.
    let boss1 = env.pane_of("dash", "boss1").pid;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(boss1 as i32).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill boss1");
    wait_for("boss1 restarted", Duration::from_secs(10), || {
        env.panes("dash")
            .into_iter()
            .find(|p| p.agent == "boss1" && p.pid != boss1 && !p.dead)
            .map(|_| ())
    });
}

#[test]
fn a_panic_leaves_the_terminal_usable() {
    let env = TestEnv::new();
    org9(&env);
    let viewer = Viewer::start(&env, "viewer", 120, 40);
    viewer.dashboard(&env, "ORCH_DASHBOARD_PANIC=1 ");
    let screen = viewer.wait("the panic message on the main screen", |s| {
        s.contains("ORCH_DASHBOARD_PANIC") && s.trim_end().ends_with("viewer$")
    });
    assert_eq!(viewer.format("#{alternate_on}"), "0", "{screen}");
    viewer.assert_cooked(env.path());
    viewer.type_line("echo typed-back");
    viewer.wait("the echo", |s| {
        s.contains("typed-back\nviewer$") || s.contains("typed-back")
    });
    // The supervisor it started goes on without it.
    assert!(supervisor_of(&env).is_some());
}

#[test]
fn without_a_terminal_it_says_what_to_use_instead() {
    let env = TestEnv::new();
    org9(&env);
    let out = env.orch(&["dashboard"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a terminal"), "{err}");
    assert!(!env.session_exists("dash"), "nothing was started");
}

#[test]
fn layout_up_starts_the_supervisor_in_the_background_unless_told_not_to() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        "session: bg\nagents:\n  - { name: w1, role: WORKER, command: 'sleep 300' }\n",
    );
    let out = env
        .orch_command(&["layout", "up"])
        .env_remove("ORCH_NO_SUPERVISE")
        .output()
        .expect("orch");
    let text = support::succeeded(&["layout", "up"], &out);
    assert!(text.contains("started in the background"), "{text}");
    let pid = wait_for("the supervisor", Duration::from_secs(5), || {
        std::fs::read_to_string(env.state.path().join("bg").join("supervisor.lock"))
            .ok()?
            .trim()
            .parse::<u32>()
            .ok()
    });
    assert!(alive(pid));
    // It left the terminal's session: closing the terminal does not reach it.
    let sid = rustix::process::getsid(rustix::process::Pid::from_raw(pid as i32))
        .expect("its session")
        .as_raw_nonzero()
        .get() as u32;
    assert_eq!(sid, pid, "a session of its own");
    // The second `up` finds it.
    let again = env
        .orch_command(&["layout", "up"])
        .env_remove("ORCH_NO_SUPERVISE")
        .output()
        .expect("orch");
    let text = support::succeeded(&["layout", "up"], &again);
    assert!(
        text.contains(&format!("supervisor (pid {pid}) already runs")),
        "{text}"
    );
    // `status` sees it.
    let status: serde_json::Value =
        serde_json::from_str(&env.orch_ok(&["status", "--json"])).expect("json");
    assert_eq!(status["supervisor"]["pid"], pid, "{status}");
    // `down` stops it with the session.
    env.orch_ok(&["layout", "down"]);
    wait_for("the supervisor gone", Duration::from_secs(10), || {
        (!alive(pid)).then_some(())
    });

    let env2 = TestEnv::new();
    env2.write(
        "orch.yaml",
        "session: nobg\nagents:\n  - { name: w1, role: WORKER, command: 'sleep 300' }\n",
    );
    let out = env2
        .orch_command(&["layout", "up", "--no-supervise"])
        .env_remove("ORCH_NO_SUPERVISE")
        .output()
        .expect("orch");
    let text = support::succeeded(&["layout", "up"], &out);
    assert!(!text.contains("supervisor"), "{text}");
    let lock = env2.state.path().join("nobg").join("supervisor.lock");
    let pid = std::fs::read_to_string(&lock)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok());
    assert!(pid.is_none_or(|p| !alive(p)), "no supervisor runs");
}

#[test]
fn capital_y_answers_an_agents_own_approval_prompt_without_attaching() {
    let env = TestEnv::new();
    let sim = format!("'{}' agent-sim --profile codex", env!("CARGO_BIN_EXE_orch"));
    env.write(
        "orch.yaml",
        &format!(
            "session: dash\nmonitor: {{ tick: 200ms }}\nsnapshot: {{ interval: 1h }}\n\
             defaults: {{ profile: codex, command: \"{sim} --idle-after 300ms\" }}\nagents:\n\
             \x20 - {{ name: boss1, role: BOSS }}\n\
             \x20 - {{ name: worker1, role: WORKER, command: \"{sim} --prompt-after 1s\" }}\n"
        ),
    );
    let viewer = Viewer::start(&env, "viewer", 160, 45);
    viewer.dashboard(&env, "");
    // Waiting at its approval prompt: marked, first, with the question on its card.
    viewer.wait("worker1 waiting, marked, with its question", |s| {
        let card = card_col(s, "worker1");
        card.contains("waiting")
            && card.contains("! worker1")
            && card.contains("? Would you like to run")
            && s.contains("1 waiting")
    });
    // Tab goes to it (it is already first and selected, so Tab wraps round to it).
    viewer.keys(&["Tab"]);
    viewer.wait("worker1 selected", |s| s.contains("┏ ! worker1"));
    // Y names the keys first; the second Y sends them.
    viewer.keys(&["Y"]);
    viewer.wait("the keys named", |s| {
        s.contains("press Y again to send y to worker1")
    });
    viewer.keys(&["Y"]);
    viewer.wait("the keys sent", |s| s.contains("sent y to worker1"));
    let pane = env.pane_of("dash", "worker1").id;
    wait_for(
        "the answer in worker1's pane",
        Duration::from_secs(10),
        || {
            let text = env.tmux(&["capture-pane", "-p", "-t", &pane]);
            text.trim_end().ends_with('y').then_some(())
        },
    );
    // Any other key after Y cancels.
    viewer.keys(&["N"]);
    viewer.wait("the deny keys named", |s| {
        s.contains("press N again to send Escape")
    });
    viewer.keys(&["x"]);
    viewer.wait("cancelled", |s| s.contains("cancelled"));
    viewer.keys(&["q"]);
}

/// The processes `pid` started.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn sigterm_and_sighup_give_the_terminal_back() {
    let env = TestEnv::new();
    org9(&env);
    let viewer = Viewer::start(&env, "viewer", 120, 40);
    let shell: u32 = viewer
        .format("#{pane_pid}")
        .parse()
        .expect("the shell's pid");
    for signal in [rustix::process::Signal::TERM, rustix::process::Signal::HUP] {
        viewer.dashboard(&env, "");
        viewer.wait("the dashboard", |s| s.contains("agents (9)"));
        let dashboard = wait_for("the dashboard's process", Duration::from_secs(5), || {
            children(shell).first().copied()
        });
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(dashboard as i32).expect("pid"),
            signal,
        )
        .expect("signal");
        let screen = viewer.wait("the shell again", |s| {
            !s.contains("agents (9)") && s.trim_end().ends_with("viewer$")
        });
        assert_eq!(
            viewer.format("#{alternate_on}"),
            "0",
            "{signal:?}: {screen}"
        );
        wait_for("the dashboard gone", Duration::from_secs(5), || {
            (!alive(dashboard)).then_some(())
        });
        viewer.type_line("clear");
    }
    viewer.assert_cooked(env.path());
    assert!(supervisor_of(&env).is_some(), "the supervisor runs on");
}

#[test]
fn the_demo_opens_the_dashboard_where_y_approves_its_rollback_and_q_cleans_up() {
    let env = TestEnv::new();
    let (tmux_tmpdir, tmpdir) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let viewer = Viewer::start(&env, "viewer", 160, 45);
    viewer.wait("the shell prompt", |s| s.contains("viewer$"));
    viewer.type_line(&format!(
        "TMUX_TMPDIR='{}' TMPDIR='{}' '{}' demo",
        tmux_tmpdir.path().display(),
        tmpdir.path().display(),
        env!("CARGO_BIN_EXE_orch"),
    ));
    // The dashboard on the demo's own session: nine agents, then the story's rollback,
    // which waits for the human (`y`, with exactly one waiting).
    let slow = Duration::from_secs(90);
    let until = |what: &str, f: &dyn Fn(&str) -> bool| {
        let mut last = String::new();
        poll(slow, || {
            last = viewer.screen();
            f(&last).then_some(())
        })
        .unwrap_or_else(|| panic!("timed out waiting for {what}; the screen:\n{last}"));
    };
    until("the demo's nine agents", &|s| {
        s.contains("agents (9)") && NAMES.iter().all(|n| s.contains(n))
    });
    until("the rollback prompt", &|s| s.contains("y approve"));
    viewer.keys(&["y"]);
    until("the rollback executed", &|s| s.contains("executed"));
    viewer.keys(&["q"]);
    until("the shell again", &|s| {
        !s.contains("agents (9)") && s.trim_end().ends_with("viewer$")
    });
    // Everything the demo made is gone: its workspace and its tmux server's socket.
    wait_for("the workspace removed", Duration::from_secs(20), || {
        std::fs::read_dir(tmpdir.path())
            .map(|d| d.count() == 0)
            .unwrap_or(true)
            .then_some(())
    });
    let uid = rustix::process::getuid().as_raw();
    let sockets = tmux_tmpdir.path().join(format!("tmux-{uid}"));
    wait_for(
        "the demo's tmux server gone",
        Duration::from_secs(20),
        || {
            std::fs::read_dir(&sockets)
                .map(|d| d.count() == 0)
                .unwrap_or(true)
                .then_some(())
        },
    );
}

#[test]
fn r_s_and_capital_s_restart_stop_start_and_snapshot_through_the_supervisor() {
    let env = TestEnv::new();
    env.write(
        "orch.yaml",
        "session: dash\nmonitor: { tick: 200ms }\nsnapshot: { interval: 1h }\nagents:\n\
         \x20 - { name: boss1, role: BOSS, command: 'exec sleep 600' }\n\
         \x20 - { name: worker1, role: WORKER, command: 'exec sleep 600' }\n",
    );
    let viewer = Viewer::start(&env, "viewer", 160, 45);
    viewer.dashboard(&env, "");
    viewer.wait("both running, boss1 selected", |s| {
        card_col(s, "boss1").contains("running")
            && card_col(s, "worker1").contains("running")
            && s.contains("┏ boss1")
    });
    let before = env.pane_of("dash", "boss1").pid;
    // r: a human's restart (no backoff, not a crash).
    viewer.keys(&["r"]);
    viewer.wait("the restart said", |s| {
        s.contains("boss1: restart handed to the supervisor")
    });
    wait_for("boss1 running anew", Duration::from_secs(10), || {
        (env.pane_of("dash", "boss1").pid != before).then_some(())
    });
    // s stops it (and it stays stopped), s again starts it.
    viewer.keys(&["s"]);
    viewer.wait("boss1 stopped", |s| {
        card_col(s, "boss1").contains("stopped")
    });
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        card_col(&viewer.screen(), "boss1").contains("stopped"),
        "stays stopped"
    );
    viewer.keys(&["s"]);
    viewer.wait("boss1 running again", |s| {
        card_col(s, "boss1").contains("running")
    });
    // S: a snapshot, named in the status bar and on disk.
    viewer.keys(&["S"]);
    let screen = viewer.wait("the snapshot written", |s| s.contains(" written"));
    let id = screen
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("the snapshot's id")
        .to_owned();
    let snapshots = env.state.path().join("dash").join("snapshots");
    assert!(
        std::fs::read_dir(&snapshots)
            .expect("snapshots")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&id)),
        "snapshot {id} in {}",
        snapshots.display()
    );
    viewer.keys(&["q"]);
}
