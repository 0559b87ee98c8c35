//! The conformance suite: orch against the real, pinned agent CLIs (Claude Code, Codex,
//! Gemini CLI, Aider), each in a pane of a private tmux server with its own HOME, fake
//! keys and no network. For each CLI:
//! - the pane reaches its prompt and orch reports `idle`;
//! - a one-line and a 30-line message are both submitted: the CLI starts answering and
//!   shows its network error, which only a submitted prompt does;
//! - `--when idle` waits while the CLI works and goes out once it is back at its prompt;
//! - snapshot, kill the tmux server: the supervisor restores the session itself, the CLI
//!   starts again with its resume command and the layout's real environment (not the
//!   redacted copy in the snapshot), the processes that outlived the server are stopped,
//!   and the handover is submitted.
//!
//! The CLIs come from `scripts/agent-clis` (installed into a cache once per version; the
//! first run of this suite installs them). `ORCH_SKIP_REAL_AGENTS=1` skips the suite; a
//! CLI that cannot be installed fails it. The figures each test prints (`--nocapture`)
//! are the ones BENCHMARKS.md records.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::{Supervisor, TestEnv, poll, wait_for};

/// The folders holding each CLI's executable, installed on first use.
fn cli_paths() -> Option<&'static [PathBuf]> {
    static PATHS: OnceLock<Option<Vec<PathBuf>>> = OnceLock::new();
    PATHS
        .get_or_init(|| {
            if std::env::var("ORCH_SKIP_REAL_AGENTS").is_ok_and(|v| v == "1") {
                eprintln!("ORCH_SKIP_REAL_AGENTS=1: the real agent CLIs are not tested");
                return None;
            }
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/agent-clis");
            let out = Command::new(&script).output().expect("run scripts/agent-clis");
            assert!(
                out.status.success(),
                "scripts/agent-clis could not install the agent CLIs (set ORCH_SKIP_REAL_AGENTS=1 to skip this suite):\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(PathBuf::from)
                    .collect(),
            )
        })
        .as_deref()
}

/// One agent CLI as the suite drives it.
struct Cli {
    profile: &'static str,
    /// The layout's `command:`.
    command: &'static str,
    /// Extra `env:` of the agent (HOME and PATH are added).
    env: &'static [(&'static str, &'static str)],
    /// A regular expression the screen shows once a submitted prompt reached the CLI's
    /// request code (without a network: its connection error, a retry, a spinner).
    answering: &'static str,
    /// The key a person presses to end a turn early (the test's, never orch's); `None`:
    /// the CLI gives up on its own.
    interrupt: Option<&'static str>,
    /// A command line argument the restored agent's process must carry.
    resume_arg: &'static str,
    /// The environment variable holding the agent's fake key.
    key_var: &'static str,
    /// The environment variable that points the CLI's API at a server of the test's that
    /// takes requests and never answers, so a turn works until interrupted, as with a
    /// slow model; `None`: the CLI fails its requests itself (a turn of seconds).
    hanging_api_var: Option<&'static str>,
}

/// A server that accepts connections and never answers: requests to it hang. Returns its
/// URL; its connections live as long as the test process.
fn hanging_api() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().map_while(Result::ok) {
            held.push(conn);
        }
    });
    url
}

const CLAUDE_KEY: &str = "sk-ant-api03-FAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE-abcdefghijkl";
const OPENAI_KEY: &str = "sk-proj-FAKEFAKEFAKEFAKEFAKEFAKEFAKE0123456789";
const GEMINI_KEY: &str = "AIzaFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE0123";

const CLAUDE: Cli = Cli {
    profile: "claude",
    command: "claude",
    env: &[
        ("ANTHROPIC_API_KEY", CLAUDE_KEY),
        ("DISABLE_AUTOUPDATER", "1"),
        // A few quick retries: a turn works for a few seconds, then ends on its own.
        ("CLAUDE_CODE_MAX_RETRIES", "2"),
    ],
    answering: r"API Error|Unable to connect|Retrying in",
    interrupt: None,
    resume_arg: "--continue",
    key_var: "ANTHROPIC_API_KEY",
    hanging_api_var: None,
};

const CODEX: Cli = Cli {
    profile: "codex",
    // No app-server daemon: it would outlive the test's tmux server.
    command: "codex -c features.daemon_auto_start=false",
    env: &[("OPENAI_API_KEY", OPENAI_KEY)],
    answering: r"Reconnecting|error sending request|Stream disconnected|Working \(",
    interrupt: Some("Escape"),
    resume_arg: "resume",
    key_var: "OPENAI_API_KEY",
    hanging_api_var: None,
};

const GEMINI: Cli = Cli {
    profile: "gemini",
    command: "gemini",
    env: &[("GEMINI_API_KEY", GEMINI_KEY)],
    // Not "esc to cancel" alone: Gemini shows it while it runs orch's hook too.
    answering: r"Thinking\.\.\.|request failed",
    interrupt: Some("Escape"),
    resume_arg: "--resume",
    key_var: "GEMINI_API_KEY",
    // Without it a turn fails within a second, often before `--when idle` can be sent.
    hanging_api_var: Some("GOOGLE_GEMINI_BASE_URL"),
};

const AIDER: Cli = Cli {
    profile: "aider",
    command: "aider --no-git --no-check-update --model gpt-4o --analytics-disable --no-show-release-notes",
    env: &[
        ("OPENAI_API_KEY", OPENAI_KEY),
        ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
    ],
    answering: r"Connection error|APIConnectionError|InternalServerError|Retrying in",
    interrupt: Some("C-c"),
    resume_arg: "--restore-chat-history",
    key_var: "OPENAI_API_KEY",
    hanging_api_var: None,
};

/// First-run state each CLI needs to start without an account: accepted onboarding, a
/// trusted project, an approved key, the auth method chosen, updates off.
fn prepare_home(cli: &Cli, home: &Path, project: &Path, path: &str) {
    let write = |rel: &str, text: String| {
        let file = home.join(rel);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(file, text).expect("write");
    };
    let project = project.display();
    match cli.profile {
        "claude" => write(
            ".claude.json",
            format!(
                r#"{{"hasCompletedOnboarding":true,"autoUpdates":false,
                "customApiKeyResponses":{{"approved":["{}"],"rejected":[]}},
                "projects":{{"{project}":{{"hasTrustDialogAccepted":true,"hasCompletedProjectOnboarding":true}}}}}}"#,
                &CLAUDE_KEY[CLAUDE_KEY.len() - 20..]
            ),
        ),
        "codex" => {
            let codex = path
                .split(':')
                .map(|d| Path::new(d).join("codex"))
                .find(|p| p.exists())
                .expect("codex installed");
            let mut login = Command::new(codex)
                .args(["login", "--with-api-key"])
                .env("HOME", home)
                .env("PATH", path)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("codex login");
            {
                use std::io::Write;
                let mut stdin = login.stdin.take().expect("stdin");
                writeln!(stdin, "{OPENAI_KEY}").expect("key");
            }
            assert!(login.wait().expect("codex login").success(), "codex login");
            let config = home.join(".codex/config.toml");
            let mut text = std::fs::read_to_string(&config).unwrap_or_default();
            text.push_str(&format!(
                "check_for_update_on_startup = false\n\n[projects.\"{project}\"]\ntrust_level = \"trusted\"\n"
            ));
            std::fs::write(config, text).expect("codex config");
        }
        "gemini" => {
            write(
                ".gemini/settings.json",
                r#"{"security":{"auth":{"selectedType":"gemini-api-key"},"folderTrust":{"enabled":true}},
                "general":{"disableAutoUpdate":true,"disableUpdateNag":true},
                "privacy":{"usageStatisticsEnabled":false}}"#
                    .to_owned(),
            );
            write(
                ".gemini/trustedFolders.json",
                format!(r#"{{"{project}":"TRUST_FOLDER"}}"#),
            );
        }
        _ => {}
    }
}

/// What a conformance run measured, printed for BENCHMARKS.md.
#[derive(Debug, Default)]
struct Figures {
    prompt_to_idle_ms: u128,
    one_line_ms: u128,
    thirty_lines_ms: u128,
    when_idle_after_prompt_ms: i64,
    restore_to_handover_ms: u128,
}

fn status_activity(env: &TestEnv) -> String {
    let out = env.orch_ok(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("status json");
    v["agents"][0]["activity"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn screen(env: &TestEnv, session: &str) -> String {
    env.tmux(&["capture-pane", "-p", "-J", "-t", &format!("={session}:")])
}

/// What a failure message shows: the pane (its process, whether it died), its screen and
/// recent history, and the supervisor's newest events, so a failure seen only in CI can
/// be understood from its log.
fn diagnosis(env: &TestEnv, session: &str) -> String {
    let target = format!("={session}:");
    let pane = env.tmux(&[
        "display-message",
        "-p",
        "-t",
        &target,
        "pane #{pane_id} pid #{pane_pid} command #{pane_current_command} dead #{pane_dead} (status #{pane_dead_status}) size #{pane_width}x#{pane_height} cursor #{cursor_x},#{cursor_y} alternate #{alternate_on}",
    ]);
    let history = env.tmux(&["capture-pane", "-p", "-J", "-S", "-60", "-t", &target]);
    let events = std::fs::read_to_string(env.state.path().join(session).join("events.jsonl"))
        .unwrap_or_default();
    let events: Vec<&str> = events.lines().collect();
    let newest = &events[events.len().saturating_sub(25)..];
    format!(
        "{}\nscreen and history (trailing blank lines dropped):\n{}\nnewest events:\n{}",
        pane.trim_end(),
        history.trim_end(),
        newest.join("\n")
    )
}

/// Sends `text` (by file), insists it was delivered and submitted, and waits for the CLI
/// to show it is answering. Returns the delivery time orch reported.
fn send_submitted(env: &TestEnv, cli: &Cli, session: &str, text: &str, what: &str) -> u128 {
    let before = screen(env, session);
    let re = regex::Regex::new(cli.answering).expect("answering pattern");
    let seen_before = re.find_iter(&before).count();
    let file = env.write(&format!("{what}.txt"), text);
    let args = ["send", "--file", file.to_str().expect("utf8"), "agent"];
    let sent = env.orch(&args);
    assert!(
        sent.status.success(),
        "{}: {what}: orch {args:?} failed ({}):\n{}{}\n{}",
        cli.profile,
        sent.status,
        String::from_utf8_lossy(&sent.stdout),
        String::from_utf8_lossy(&sent.stderr),
        diagnosis(env, session)
    );
    let out = String::from_utf8_lossy(&sent.stdout).into_owned();
    let ms: u128 = out
        .strip_prefix("agent: delivered (")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "{}: {what}: {out}\n{}",
                cli.profile,
                diagnosis(env, session)
            )
        });
    // The CLI got it as a prompt: it tries to answer.
    poll(Duration::from_secs(45), || {
        (re.find_iter(&screen(env, session)).count() > seen_before).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{}: {what} was reported delivered but the CLI never started answering:\n{}",
            cli.profile,
            diagnosis(env, session)
        )
    });
    ms
}

/// Ends the CLI's turn (its own give-up, or the key a person would press) and waits
/// until orch reports it idle and its screen stands still.
/// `last_key` is when the interrupt key was last pressed, across calls: Aider exits on two
/// Ctrl-C within 2 s, and a slow `orch status` under load can make two calls press it so.
fn back_to_prompt(env: &TestEnv, cli: &Cli, session: &str, last_key: &mut Option<Instant>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next_key = Instant::now() + Duration::from_millis(500);
    if let Some(at) = *last_key {
        next_key = next_key.max(at + Duration::from_secs(3));
    }
    // A hook can report the turn over before the CLI redraws, and a queued message can
    // start the next turn right after: done only once orch says idle and the screen has
    // stood still for a while (a turn's spinner never does), so the next send's "before"
    // is the prompt, not the last turn's "Thinking...".
    let mut still: Option<(String, Instant)> = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "{}: never idle at a still screen again (activity {}):\n{}",
            cli.profile,
            status_activity(env),
            diagnosis(env, session)
        );
        if status_activity(env) == "idle" {
            let now = screen(env, session);
            match &still {
                Some((seen, since)) if *seen == now => {
                    if since.elapsed() >= Duration::from_millis(600) {
                        return;
                    }
                }
                _ => still = Some((now, Instant::now())),
            }
        } else {
            still = None;
            // As a person would: press the CLI's interrupt key, again if it did not take.
            if let Some(key) = cli.interrupt
                && Instant::now() >= next_key
            {
                env.tmux(&["send-keys", "-t", &format!("={session}:"), key]);
                *last_key = Some(Instant::now());
                next_key = Instant::now() + Duration::from_secs(3);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The session's audit log, record by record.
fn audit_records(env: &TestEnv, session: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(env.state.path().join(session).join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn event_ms(ev: &serde_json::Value) -> i64 {
    let ts = ev["ts"].as_str().expect("ts");
    let t = humantime::parse_rfc3339(ts).expect("rfc3339");
    t.duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// The command lines and environments of every process under `pid`.
fn tree_cmdlines(pid: u32) -> Vec<(u32, String)> {
    support::process_tree(pid)
        .into_iter()
        .filter_map(|p| {
            let raw = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
            Some((p, String::from_utf8_lossy(&raw).replace('\0', " ")))
        })
        .collect()
}

fn environ(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default())
        .replace('\0', "\n")
}

fn conformance(cli: &Cli) {
    let Some(paths) = cli_paths() else { return };
    let env = TestEnv::outside_tmp();
    let session = format!("real-{}", cli.profile);
    let project = env.path().join("project");
    std::fs::create_dir_all(&project).expect("project");
    // Its own repository: CLIs that look for the enclosing git root (Aider writes its
    // history files there) must not find orch's own checkout above the build's temp dir.
    let git = Command::new("git")
        .args(["init", "-q"])
        .current_dir(&project)
        .env("HOME", env.home.path())
        .status()
        .expect("git init");
    assert!(git.success(), "git init");
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    );
    prepare_home(cli, env.home.path(), &project, &path);
    let mut agent_env = format!("HOME: '{}', PATH: '{path}'", env.home.path().display());
    for (k, v) in cli.env {
        agent_env.push_str(&format!(", {k}: '{v}'"));
    }
    if let Some(var) = cli.hanging_api_var {
        agent_env.push_str(&format!(", {var}: '{}'", hanging_api()));
    }
    env.write(
        "orch.yaml",
        &format!(
            "session: {session}\nroot: project\nmonitor: {{ tick: 200ms }}\nsnapshot: {{ interval: 1h }}\nagents:\n  - {{ name: agent, role: WORKER, profile: {}, command: \"{}\", env: {{ {agent_env} }} }}\n",
            cli.profile, cli.command
        ),
    );
    let mut figures = Figures::default();
    let mut last_key = None;
    // As under a CI runner, wherever the suite runs: the tmux server, made by the
    // supervisor, passes these on to every pane, and Gemini CLI runs headless under them.
    let mut sup = Supervisor::start_with(&env, &[("CI", "true"), ("GITHUB_ACTIONS", "true")]);
    let started = sup.expect("agent_started", Some("agent"), Duration::from_secs(20));

    // 1. At its prompt: idle.
    let idle = loop {
        let ev = sup.expect("activity_changed", Some("agent"), Duration::from_secs(90));
        if ev["to"] == "idle" {
            break ev;
        }
    };
    figures.prompt_to_idle_ms = (event_ms(&idle) - event_ms(&started)) as u128;

    // 2. One line, then thirty: both submitted.
    figures.one_line_ms = send_submitted(
        &env,
        cli,
        &session,
        "Reply with the single word pong.",
        "one-line",
    );
    back_to_prompt(&env, cli, &session, &mut last_key);
    let long: String = (1..=30)
        .map(|i| format!("{i:02}. check item {i} of the list and say whether it holds, briefly\n"))
        .collect();
    figures.thirty_lines_ms = send_submitted(&env, cli, &session, &long, "thirty-lines");
    back_to_prompt(&env, cli, &session, &mut last_key);
    let audit = audit_records(&env, &session);
    let confirmations: Vec<String> = audit
        .iter()
        .filter(|v| v["kind"] == "delivered")
        .map(|v| {
            assert_eq!(v["submitted"], true, "{v}");
            v["confirmation"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(confirmations.len(), 2, "{audit:#?}");

    // 3. --when idle: queued while the CLI works, delivered once it is back.
    let busy = env.write("busy.txt", "Reply with the single word ping.");
    // When the status that said "working" was asked for: the CLI went back to its prompt
    // after that (a slow `orch status` under load must not move this later).
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64
    };
    // A turn without a network can end between the status that said "working" and the
    // send (Gemini's takes about a second): then the send rightly delivers at once, and
    // the CLI is made to work again. Delivered every time, --when idle is broken.
    let mut tries = Vec::new();
    let working_since = loop {
        env.orch_ok(&["send", "--file", busy.to_str().expect("utf8"), "agent"]);
        let working_since = wait_for("the CLI to work", Duration::from_secs(20), || {
            let asked = now_ms();
            (status_activity(&env) == "working").then_some(asked - 50)
        });
        let out = env.orch_ok(&[
            "send",
            "--when",
            "idle",
            "agent",
            "After that, reply with the word done.",
        ]);
        if out.contains("queued") {
            break working_since;
        }
        tries.push(out);
        assert!(
            tries.len() < 3,
            "{}: while it works, the message waits, but each time: {tries:#?}",
            cli.profile
        );
        back_to_prompt(&env, cli, &session, &mut last_key);
    };
    // Its id, from the audit log's newest `send` record: the supervisor also prints the
    // deliveries it made of the earlier messages (under load `orch send` leaves them to
    // it), and the busy message's own delivery may come after the CLI started working.
    let queued_id = audit_records(&env, &session)
        .into_iter()
        .rfind(|v| v["kind"] == "send")
        .and_then(|v| v["id"].as_str().map(str::to_owned))
        .expect("the queued message is in the audit log");
    back_to_prompt(&env, cli, &session, &mut last_key);
    let queued_delivery = loop {
        let ev = sup.expect("message_delivered", Some("agent"), Duration::from_secs(30));
        if ev["id"] == queued_id.as_str() {
            break ev;
        }
    };
    assert_eq!(queued_delivery["submitted"], true, "{queued_delivery}");
    // From the moment the CLI was back at its prompt (the last idle, or waiting at a
    // dialog, before the delivery; the delivery's own submission then makes it work).
    let back = sup
        .seen
        .iter()
        .rfind(|e| {
            e["kind"] == "activity_changed"
                && (e["to"] == "idle" || e["to"] == "waiting")
                && (working_since..=event_ms(&queued_delivery)).contains(&event_ms(e))
        })
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{}: delivered before it was idle: {:#?}",
                cli.profile, sup.seen
            )
        });
    figures.when_idle_after_prompt_ms = event_ms(&queued_delivery) - event_ms(&back);
    assert!(
        figures.when_idle_after_prompt_ms < 5_000,
        "{}: --when idle went out {} ms after the prompt (the 30 s fallback?)",
        cli.profile,
        figures.when_idle_after_prompt_ms
    );
    back_to_prompt(&env, cli, &session, &mut last_key);

    // 4. Snapshot, kill the server: the supervisor restores, the CLI resumes with its
    //    real environment, the old processes are stopped, the handover is submitted.
    env.orch_ok(&["snapshot"]);
    let old_pane = env.pane_of(&session, "agent");
    let old_tree = support::process_tree(old_pane.pid);
    let killed = Instant::now();
    env.kill_server();
    sup.expect("server_died", None, Duration::from_secs(10));
    let restored = sup.expect("restored", None, Duration::from_secs(60));
    assert_eq!(restored["session"], session.as_str(), "{restored}");
    let handover = loop {
        let ev = sup.expect("message_delivered", Some("agent"), Duration::from_secs(90));
        if ev["from"] == "orch" {
            break ev;
        }
    };
    figures.restore_to_handover_ms = killed.elapsed().as_millis();
    assert_eq!(handover["submitted"], true, "{handover}");
    let pane = env.pane_of(&session, "agent");
    let tree = tree_cmdlines(pane.pid);
    let (cli_pid, _) = tree
        .iter()
        .find(|(_, c)| c.contains(cli.resume_arg))
        .unwrap_or_else(|| {
            panic!(
                "{}: no process resumes with {}: {tree:#?}",
                cli.profile, cli.resume_arg
            )
        });
    let environment = environ(*cli_pid);
    assert!(
        environment.lines().any(|l| l
            .strip_prefix(cli.key_var)
            .and_then(|r| r.strip_prefix('='))
            .is_some_and(|v| cli
                .env
                .iter()
                .any(|(k, real)| *k == cli.key_var && v == *real))),
        "{}: the restored CLI does not have the real {}:\n{environment}",
        cli.profile,
        cli.key_var
    );
    assert!(!environment.contains("[REDACTED]"), "{environment}");
    // Nothing of the previous incarnation runs beside the new one.
    let left: Vec<u32> = old_tree
        .into_iter()
        .filter(|p| support::alive(*p))
        .collect();
    assert!(
        left.is_empty(),
        "{}: processes of the killed session still run: {left:?}",
        cli.profile
    );

    println!(
        "{}: prompt→idle {} ms; one line {} ms; 30 lines {} ms; --when idle {} ms after the prompt; server killed→handover submitted {} ms",
        cli.profile,
        figures.prompt_to_idle_ms,
        figures.one_line_ms,
        figures.thirty_lines_ms,
        figures.when_idle_after_prompt_ms,
        figures.restore_to_handover_ms
    );
    // Stop the agent's processes before the server goes: a CLI's children can outlive it.
    env.orch_ok(&["layout", "down", "--no-snapshot", "--grace", "3s"]);
}

#[test]
fn claude_code() {
    conformance(&CLAUDE);
}

#[test]
fn codex() {
    conformance(&CODEX);
}

#[test]
fn gemini_cli() {
    conformance(&GEMINI);
}

#[test]
fn aider() {
    conformance(&AIDER);
}
