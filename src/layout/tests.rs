use super::*;

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn errors(text: &str) -> Vec<String> {
    let d = dir();
    match parse(text, "t.yaml", d.path()) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn ok(text: &str) -> Layout {
    let d = dir();
    parse(text, "t.yaml", d.path()).unwrap_or_else(|e| panic!("{e}"))
}

const MINIMAL: &str = "session: s\nagents:\n  - { name: a, role: BOSS }\n";

#[test]
fn minimal_layout_gets_defaults() {
    let l = ok(MINIMAL);
    assert_eq!(l.session.as_str(), "s");
    assert_eq!(l.window.as_str(), "agents");
    assert_eq!(l.arrange, Arrange::Tiled);
    let a = &l.agents[0];
    assert_eq!(a.profile, Profile::Shell);
    assert_eq!(a.command, None, "a shell agent runs the user's shell");
    assert_eq!(a.restart.policy, RestartPolicy::OnFailure);
    assert_eq!(a.restart.max_restarts, 5);
    assert_eq!(a.restart.backoff_initial, Duration::from_millis(500));
    assert_eq!(l.snapshot.scrollback_lines, 10_000);
    assert_eq!(l.messaging.acl, Acl::Hierarchy);
    assert!(l.quality.is_none());
}

#[test]
fn defaults_are_merged_field_by_field() {
    let l = ok(r#"
session: s
defaults:
  command: "orch agent-sim"
  profile: claude
  env: { A: "1", B: two }
  restart: { policy: always, max_restarts: 7, backoff: { initial: 1s } }
  stall_after: 10m
  limits: { memory: 4GiB }
agents:
  - { name: a, role: BOSS }
  - name: b
    role: WORKER
    command: "claude --continue"
    env: { B: three, C: 4 }
    restart: { max_restarts: 2, backoff: { max: 1m } }
"#);
    let (a, b) = (&l.agents[0], &l.agents[1]);
    assert_eq!(a.command.as_deref(), Some("orch agent-sim"));
    assert_eq!(b.command.as_deref(), Some("claude --continue"));
    assert_eq!(a.profile, Profile::Claude);
    assert_eq!(a.env.get("B").map(String::as_str), Some("two"));
    assert_eq!(b.env.get("A").map(String::as_str), Some("1"));
    assert_eq!(b.env.get("B").map(String::as_str), Some("three"));
    assert_eq!(b.env.get("C").map(String::as_str), Some("4"));
    assert_eq!(b.restart.policy, RestartPolicy::Always);
    assert_eq!(b.restart.max_restarts, 2);
    assert_eq!(a.restart.max_restarts, 7);
    assert_eq!(b.restart.backoff_initial, Duration::from_secs(1));
    assert_eq!(b.restart.backoff_max, Duration::from_secs(60));
    assert_eq!(a.restart.backoff_max, Duration::from_secs(30));
    assert_eq!(b.stall_after, Duration::from_secs(600));
    assert_eq!(b.limits.memory, Some(Size(4 << 30)));
}

#[test]
fn profile_supplies_the_default_command() {
    let l = ok("session: s\nagents:\n  - { name: a, role: BOSS, profile: codex }\n");
    assert_eq!(l.agents[0].command.as_deref(), Some("codex"));
}

#[test]
fn paths_are_relative_to_the_layout_file() {
    let d = dir();
    std::fs::create_dir(d.path().join("sub")).expect("mkdir");
    std::fs::write(d.path().join("p.md"), "plan").expect("write");
    let l = parse(
        "session: s\nroot: sub\nagents:\n  - { name: a, role: BOSS, instructions: p.md }\n  - { name: b, role: BOSS, cwd: .. }\n",
        "t.yaml",
        d.path(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.root, d.path().join("sub"));
    assert_eq!(
        l.agents[0].cwd.as_deref(),
        Some(d.path().join("sub").as_path())
    );
    assert_eq!(
        l.agents[0].instructions.as_deref(),
        Some(d.path().join("p.md").as_path())
    );
    assert_eq!(l.agents[1].cwd.as_deref(), Some(d.path()));
}

#[test]
fn unknown_top_level_key() {
    assert_eq!(
        errors("session: s\nagnets: []\n"),
        [
            "t.yaml:2:1: unknown field `agnets`, expected one of `session`, `root`, `window`, `arrange`, `defaults`, `agents`, `monitor`, `snapshot`, `quality`, `rollback`, `messaging`"
        ]
    );
}

#[test]
fn unknown_agent_key() {
    assert_eq!(
        errors("session: s\nagents:\n  - { name: a, role: BOSS, comand: x }\n"),
        [
            "t.yaml:3:28: agents[0]: unknown field `comand`, expected one of `name`, `role`, `command`, `profile`, `cwd`, `env`, `worktree`, `instructions`, `restart`, `stall_after`, `on_stall`, `on_limit`, `activity`, `paste`, `limits`"
        ]
    );
}

#[test]
fn missing_required_key() {
    assert_eq!(
        errors("agents:\n  - { name: a, role: BOSS }\n"),
        ["t.yaml:1:1: missing field `session`"]
    );
}

#[test]
fn invalid_agent_name() {
    assert_eq!(
        errors("session: s\nagents:\n  - name: Worker1\n    role: WORKER\n"),
        [
            "t.yaml:3:11: agents[0].name: invalid agent name \"Worker1\": use lower-case letters, digits, '_' and '-' (e.g. worker1)"
        ]
    );
}

#[test]
fn invalid_role() {
    assert_eq!(
        errors("session: s\nagents:\n  - { name: a, role: boss }\n"),
        [
            "t.yaml:3:22: agents[0].role: invalid role \"boss\": use PRESIDENT, BOSS, WORKER or another upper-case word (A-Z, 0-9, _)"
        ]
    );
}

#[test]
fn duplicate_agent_names() {
    assert_eq!(
        errors(
            "session: s\nagents:\n  - { name: a, role: BOSS }\n  - { name: b, role: BOSS }\n  - { name: a, role: WORKER }\n"
        ),
        ["t.yaml:5:13: agents[2].name: duplicate agent name \"a\" (first used on line 3)"]
    );
}

#[test]
fn at_least_one_agent() {
    assert_eq!(
        errors("session: s\nagents: []\n"),
        ["t.yaml:2:9: agents: at least one agent is required"]
    );
}

#[test]
fn unknown_arrangement() {
    assert_eq!(
        errors("session: s\narrange: grid\nagents:\n  - { name: a, role: BOSS }\n"),
        [
            "t.yaml:2:10: arrange: unknown variant `grid`, expected one of `tiled`, `even-horizontal`, `even-vertical`, `main-horizontal`, `main-vertical`"
        ]
    );
}

#[test]
fn invalid_session_name() {
    assert_eq!(
        errors("session: my.org\nagents:\n  - { name: a, role: BOSS }\n"),
        [
            "t.yaml:1:10: session: invalid name \"my.org\": use letters, digits, '_' and '-', not digits only (e.g. org9)"
        ]
    );
}

#[test]
fn invalid_duration() {
    assert_eq!(
        errors(
            "session: s\ndefaults:\n  restart: { window: 5 parsecs }\nagents:\n  - { name: a, role: BOSS }\n"
        ),
        [
            "t.yaml:3:22: defaults.restart.window: invalid duration \"5 parsecs\": expected a number with a unit, e.g. 500ms, 30s, 5m, 1h"
        ]
    );
    assert_eq!(
        errors("session: s\nmonitor: { tick: 30 }\nagents:\n  - { name: a, role: BOSS }\n"),
        [
            "t.yaml:2:18: monitor.tick: invalid duration \"30\": expected a number with a unit, e.g. 500ms, 30s, 5m, 1h"
        ]
    );
}

#[test]
fn invalid_size_and_percent() {
    assert_eq!(
        errors("session: s\nagents:\n  - { name: a, role: BOSS, limits: { memory: lots } }\n"),
        [
            "t.yaml:3:46: agents[0].limits.memory: invalid size \"lots\": expected a number with a unit, e.g. 512MiB, 4GiB"
        ]
    );
    assert_eq!(
        errors(
            "session: s\nmonitor: { leak: { window: 10m, min_growth: 20 } }\nagents:\n  - { name: a, role: BOSS }\n"
        ),
        [
            "t.yaml:2:45: monitor.leak.min_growth: invalid percentage \"20\": expected a number followed by %, e.g. 20%"
        ]
    );
}

#[test]
fn invalid_env() {
    assert_eq!(
        errors("session: s\nagents:\n  - { name: a, role: BOSS, env: { ORCH_AGENT: x } }\n"),
        ["t.yaml:3:35: agents[0].env: ORCH_AGENT is set by orch itself; choose another name"]
    );
}

#[test]
fn worktree_needs_a_git_repository() {
    let d = dir();
    let text = "session: s\nagents:\n  - { name: a, role: BOSS }\n  - { name: b, role: WORKER, worktree: true }\n";
    let err = parse(text, "t.yaml", d.path()).expect_err("not a git repository");
    assert_eq!(
        err.to_string(),
        format!(
            "t.yaml:4:40: agents[1] (b): worktree needs root {} to be inside a git repository; run `git init` there or remove worktree",
            d.path().display()
        )
    );
    git2::Repository::init(d.path()).expect("git init");
    let l = parse(text, "t.yaml", d.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.agents[1].worktree, Some(WorktreeSpec::default()));
    assert_eq!(
        l.agents[1].cwd, None,
        "a worktree agent's cwd is decided by layout up"
    );
}

#[test]
fn worktree_copy_list_and_cwd_conflict() {
    let d = dir();
    git2::Repository::init(d.path()).expect("git init");
    let l = parse(
        "session: s\nagents:\n  - { name: a, role: BOSS, worktree: { copy: [.env, config/local.toml] } }\n",
        "t.yaml",
        d.path(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let copy = &l.agents[0].worktree.as_ref().expect("worktree").copy;
    assert_eq!(
        copy,
        &[PathBuf::from(".env"), PathBuf::from("config/local.toml")]
    );

    let err = parse(
        "session: s\nagents:\n  - { name: a, role: BOSS, worktree: true, cwd: . }\n",
        "t.yaml",
        d.path(),
    )
    .expect_err("conflict");
    assert_eq!(
        err.to_string(),
        "t.yaml:3:49: agents[0] (a): cwd cannot be combined with worktree, whose agent works at the top of its own worktree"
    );
    let err = parse(
        "session: s\nagents:\n  - { name: a, role: BOSS, worktree: { cp: [] } }\n",
        "t.yaml",
        d.path(),
    )
    .expect_err("unknown key");
    assert_eq!(
        err.to_string(),
        "t.yaml:3:38: agents[0].worktree: unknown field `cp`, expected `copy`"
    );
}

#[test]
fn several_errors_are_all_reported_in_file_order() {
    let errs = errors(
        "session: s\nroot: nowhere\nagents:\n  - { name: a, role: BOSS, cwd: missing }\n  - { name: a, role: BOSS }\n",
    );
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(errs[0].starts_with("t.yaml:2:7: root "), "{errs:?}");
    assert!(errs[0].ends_with("/nowhere is not a directory"), "{errs:?}");
    assert!(
        errs[1].starts_with("t.yaml:4:33: agents[0] (a): cwd "),
        "{errs:?}"
    );
    assert!(
        errs[2].starts_with("t.yaml:5:13: agents[1].name: duplicate"),
        "{errs:?}"
    );
}

#[test]
fn yaml_syntax_error() {
    let errs = errors("session: s\nagents:\n  - { name: a, role: BOSS\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("t.yaml:4:1: "), "{errs:?}");
}

#[test]
fn invalid_regular_expressions() {
    assert_eq!(
        errors(
            "session: s\nagents:\n  - { name: a, role: BOSS }\nsnapshot: { redact: [\"sk-(\"] }\n"
        ),
        [
            "t.yaml:4:22: snapshot.redact[0]: invalid regular expression: regex parse error: sk-( ^ error: unclosed group"
        ]
    );
}

#[test]
fn backoff_initial_above_max() {
    assert_eq!(
        errors(
            "session: s\ndefaults:\n  restart: { backoff: { initial: 1m, max: 1s } }\nagents:\n  - { name: a, role: BOSS }\n"
        ),
        [
            "t.yaml:3:23: agents[0] (a): restart.backoff.initial (1m) is larger than restart.backoff.max (1s)"
        ]
    );
}

#[test]
fn the_full_spec_example_parses() {
    let d = dir();
    std::fs::create_dir(d.path().join("prompts")).expect("mkdir");
    std::fs::write(d.path().join("prompts/president.md"), "plan").expect("write");
    git2::Repository::init(d.path()).expect("git init");
    let text = r#"
session: org9
root: .
window: agents
arrange: tiled
defaults:
  command: "orch agent-sim"
  profile: claude
  restart: { policy: on-failure, max_restarts: 5, window: 60s, min_uptime: 5s,
             backoff: { initial: 500ms, max: 30s } }
  stall_after: 300s
  limits: { memory: 4GiB }
agents:
  - { name: president, role: PRESIDENT, instructions: prompts/president.md }
  - { name: boss1, role: BOSS }
  - { name: worker1, role: WORKER, command: "claude", worktree: true }
monitor:
  tick: 1s
  resources: 5s
  error_patterns: ["panic", "Traceback", "rate limit"]
  error_storm: { count: 10, window: 5m }
  leak: { window: 10m, min_growth: 20% }
snapshot: { interval: 60s, keep: 50, scrollback_lines: 10000, redact: ["sk-[A-Za-z0-9_-]{20,}"] }
quality: { repo: ., check: "cargo test", timeout: 10m, branches: [main] }
rollback: { auto_max_risk: medium, max_consecutive: 3 }
messaging: { acl: hierarchy }
"#;
    let l = parse(text, "orch.yaml", d.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.agents.len(), 3);
    assert_eq!(l.monitor.leak_min_growth, Percent(0.2));
    assert_eq!(l.monitor.error_storm_window, Duration::from_secs(300));
    assert_eq!(
        l.quality.as_ref().map(|q| q.check.as_str()),
        Some("cargo test")
    );
    assert_eq!(l.rollback.auto_max_risk, Risk::Medium);
    assert_eq!(l.agents[2].command.as_deref(), Some("claude"));
}

#[test]
fn builtin_layouts_validate() {
    // The presets give workers worktrees, so they need a git repository as root.
    let d = dir();
    git2::Repository::init(d.path()).expect("git init");
    for b in BUILTIN {
        let l = parse(b.text, b.name, d.path()).unwrap_or_else(|e| panic!("{}: {e}", b.name));
        assert_eq!(l.session.as_str(), b.name);
    }
    let names = |name: &str| -> Vec<String> {
        let b = builtin::find(name).expect("built-in");
        let l = parse(b.text, b.name, d.path()).unwrap_or_else(|e| panic!("{e}"));
        l.agents
            .iter()
            .map(|a| format!("{}:{}", a.name, a.role))
            .collect()
    };
    assert_eq!(
        names("org9"),
        [
            "president:PRESIDENT",
            "boss1:BOSS",
            "boss2:BOSS",
            "worker1:WORKER",
            "worker2:WORKER",
            "worker3:WORKER",
            "worker4:WORKER",
            "worker5:WORKER",
            "worker6:WORKER"
        ]
    );
    assert_eq!(
        names("org5"),
        [
            "president:PRESIDENT",
            "boss1:BOSS",
            "worker1:WORKER",
            "worker2:WORKER",
            "worker3:WORKER"
        ]
    );
}

#[test]
fn source_resolution() {
    let d = dir();
    assert!(
        matches!(resolve_source(None, d.path()), Ok(LayoutSource::Builtin(b)) if b.name == "org9")
    );
    assert!(
        matches!(resolve_source(Some("org5"), d.path()), Ok(LayoutSource::Builtin(b)) if b.name == "org5")
    );
    std::fs::create_dir(d.path().join("layouts")).expect("mkdir");
    std::fs::write(d.path().join("layouts/team.yaml"), MINIMAL).expect("write");
    assert!(
        matches!(resolve_source(Some("team"), d.path()), Ok(LayoutSource::File(p)) if p.ends_with("layouts/team.yaml"))
    );
    std::fs::write(d.path().join("orch.yaml"), MINIMAL).expect("write");
    assert!(
        matches!(resolve_source(None, d.path()), Ok(LayoutSource::File(p)) if p.ends_with("orch.yaml"))
    );
    let err = resolve_source(Some("nosuch"), d.path()).expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "nosuch: no such layout: not a file, a built-in layout, or ./layouts/<name>.yaml; `orch layout list` shows the layouts available"
    );
    let err = resolve_source(Some("x/none.yaml"), d.path()).expect_err("missing file");
    assert_eq!(
        err.to_string(),
        "x/none.yaml: no such file; check the path given to --layout"
    );
}

#[test]
fn supervision_keys() {
    let l = ok(
        "session: s\ndefaults:\n  on_stall: restart\n  activity: { waiting: ['Approve\\?'] }\nagents:\n  - { name: a, role: BOSS, on_limit: alert }\n  - { name: b, role: BOSS }\n",
    );
    assert_eq!(l.agents[0].on_stall, OnStall::Restart);
    assert_eq!(l.agents[0].on_limit, OnLimit::Alert);
    assert_eq!(
        l.agents[1].on_limit,
        OnLimit::Restart,
        "SPEC: alert, then restart"
    );
    assert_eq!(
        l.agents[1].activity.waiting,
        Some(vec!["Approve\\?".to_owned()])
    );
    assert_eq!(
        errors("session: s\nagents:\n  - { name: a, role: BOSS, activity: { idle: ['('] } }\n"),
        [
            "t.yaml:3:47: agents[0] (a): activity.idle[0]: invalid regular expression: regex parse error: ( ^ error: unclosed group"
        ]
    );
    assert_eq!(
        errors("session: s\nagents:\n  - { name: a, role: BOSS, on_stall: panic }\n"),
        ["t.yaml:3:38: agents[0].on_stall: unknown variant `panic`, expected `alert` or `restart`"]
    );
}

#[test]
fn paste_and_server_death_keys() {
    let l = ok(
        "session: s\nsnapshot: { on_server_death: alert }\ndefaults:\n  paste: { settle: 250ms }\nagents:\n  - { name: a, role: BOSS, paste: { placeholders: ['\\[Pasted\\d+\\]'] } }\n  - { name: b, role: BOSS }\n",
    );
    assert_eq!(
        l.snapshot.on_server_death,
        crate::layout::OnServerDeath::Alert
    );
    assert_eq!(
        l.agents[0].paste.placeholders,
        Some(vec!["\\[Pasted\\d+\\]".to_owned()])
    );
    assert_eq!(l.agents[1].paste.settle, Some(Duration::from_millis(250)));
    assert_eq!(l.agents[1].paste.placeholders, None);
    assert_eq!(
        ok("session: s\nagents:\n  - { name: a, role: BOSS }\n")
            .snapshot
            .on_server_death,
        crate::layout::OnServerDeath::Restore,
        "restore by default"
    );
    assert_eq!(
        errors(
            "session: s\nagents:\n  - { name: a, role: BOSS, paste: { placeholders: ['('] } }\n"
        ),
        [
            "t.yaml:3:52: agents[0] (a): paste.placeholders[0]: invalid regular expression: regex parse error: ( ^ error: unclosed group"
        ]
    );
}

#[test]
fn quality_and_rollback_get_their_gate_defaults() {
    let l = ok(
        "session: s\nquality: { check: \"cargo test\" }\nagents:\n  - { name: a, role: BOSS }\n",
    );
    let q = l.quality.as_ref().expect("quality");
    assert_eq!(q.branches, vec!["main".to_owned()]);
    assert_eq!(q.retries, 1, "a red result is run once more by default");
    assert_eq!(q.identity, Identity::User);
    assert_eq!(l.rollback.max_auto_per_day, 10);
    assert_eq!(l.rollback.max_consecutive, 3);
    let l = ok(
        "session: s\nquality: { check: t, retries: 0, identity: per-agent }\nrollback: { max_auto_per_day: 4 }\nagents:\n  - { name: a, role: BOSS }\n",
    );
    let q = l.quality.as_ref().expect("quality");
    assert_eq!((q.retries, q.identity), (0, Identity::PerAgent));
    assert_eq!(l.rollback.max_auto_per_day, 4);
}

#[test]
fn gate_settings_are_checked_with_their_positions() {
    // A zero timeout is refused while parsing, before the other checks run.
    let e = errors(
        "session: s\nquality:\n  check: t\n  timeout: 0s\nagents:\n  - { name: a, role: BOSS }\n",
    );
    assert!(
        e.iter()
            .any(|l| l.starts_with("t.yaml:4:") && l.contains("quality.timeout")),
        "{e:?}"
    );
    let e = errors(
        "session: s\nquality:\n  check: t\n  retries: 11\n  timeout: 5m\n  branches: [main, 'a..b', 'refs/heads/x']\nagents:\n  - { name: a, role: BOSS }\n",
    );
    assert!(
        e.iter()
            .any(|l| l.starts_with("t.yaml:4:") && l.contains("quality.retries: at most 10")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|l| l.starts_with("t.yaml:6:") && l.contains("quality.branches[1]")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|l| l.contains("quality.branches[2]") && l.contains("short name")),
        "{e:?}"
    );
    let e = errors(
        "session: s\nquality: { check: t, branches: [] }\nagents:\n  - { name: a, role: BOSS }\n",
    );
    assert!(
        e[0].contains("quality.branches: name at least one"),
        "{e:?}"
    );
    let e = errors(
        "session: s\nquality: { check: t, identity: all }\nagents:\n  - { name: a, role: BOSS }\n",
    );
    assert!(
        e[0].starts_with("t.yaml:2:") && e[0].contains("per-agent"),
        "{e:?}"
    );
    let e = errors(
        "session: s\nrollback: { max_auto_per_day: -1 }\nagents:\n  - { name: a, role: BOSS }\n",
    );
    assert!(e[0].starts_with("t.yaml:2:"), "{e:?}");
}

/// Arbitrary layouts: built from every key of the schema with values drawn from good,
/// borderline and hostile ones, and as raw text. Whatever comes in, `parse` returns (no
/// panic), every error names a line and column, and a layout it accepts is one the
/// runtime can honour (no zero period, no duration past a year, names that fit).
mod arbitrary {
    use super::*;
    use proptest::prelude::*;

    fn duration() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => (1u64..100_000).prop_map(|n| format!("{n}ms")),
            8 => (1u64..100_000).prop_map(|n| format!("{n}s")),
            1 => Just("0s".to_owned()),
            1 => Just("0ms".to_owned()),
            1 => Just("1ms".to_owned()),
            1 => Just("18446744073709551615s".to_owned()),
            1 => Just("365d".to_owned()),
            1 => Just("366d".to_owned()),
            1 => Just("30".to_owned()),
            1 => "[a-z0-9 ]{0,8}",
        ]
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            20 => "[a-z][a-z0-9_-]{0,10}",
            1 => Just("all".to_owned()),
            1 => Just("user".to_owned()),
            1 => Just("orch".to_owned()),
            1 => "[a-z]{60,80}",
            1 => "[A-Za-z0-9 :.%\u{fe0f}]{0,12}",
        ]
    }

    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            duration(),
            name(),
            "-?[0-9]{1,12}",
            Just("[[[[]]]]".to_owned()),
            Just("~".to_owned()),
            Just("''".to_owned()),
            Just("\"\\0\"".to_owned()),
        ]
    }

    /// A flow mapping of some of `keys`, each present with its probability and a value
    /// from its strategy.
    fn mapping(keys: Vec<(&'static str, f64, BoxedStrategy<String>)>) -> BoxedStrategy<String> {
        let fields: Vec<BoxedStrategy<Option<String>>> = keys
            .into_iter()
            .map(|(k, p, v)| {
                proptest::option::weighted(p, v.prop_map(move |v| format!("{k}: {v}"))).boxed()
            })
            .collect();
        fields
            .prop_map(|kv| {
                format!(
                    "{{ {} }}",
                    kv.into_iter().flatten().collect::<Vec<_>>().join(", ")
                )
            })
            .boxed()
    }

    fn layout() -> impl Strategy<Value = String> {
        let agent = (
            name(),
            prop_oneof![8 => Just("WORKER"), 8 => Just("BOSS"), 1 => Just("boss")],
            prop_oneof![8 => Just("'exec sleep 1'".to_owned()), 1 => scalar()],
        )
            .prop_map(|(n, r, c)| format!("  - {{ name: {n}, role: {r}, command: {c} }}\n"));
        let monitor = mapping(vec![
            ("tick", 0.5, duration().boxed()),
            ("resources", 0.5, duration().boxed()),
            ("maintenance", 0.5, duration().boxed()),
            ("bogus", 0.05, scalar().boxed()),
        ]);
        let snapshot = mapping(vec![
            ("interval", 0.5, duration().boxed()),
            (
                "keep",
                0.5,
                prop_oneof![1 => Just("0".to_owned()), 8 => Just("5".to_owned())].boxed(),
            ),
            (
                "scrollback_lines",
                0.5,
                prop_oneof![8 => Just("100".to_owned()), 1 => Just("4294967295".to_owned())]
                    .boxed(),
            ),
        ]);
        let restart = mapping(vec![
            ("window", 0.5, duration().boxed()),
            ("min_uptime", 0.5, duration().boxed()),
        ]);
        (
            name(),
            proptest::collection::vec(agent, 1..4),
            monitor,
            snapshot,
            proptest::option::of(duration()),
            restart,
            any::<bool>(),
        )
            .prop_map(
                |(session, agents, monitor, snapshot, stall, restart, bom)| {
                    let mut y = String::new();
                    if bom {
                        y.push('\u{feff}');
                    }
                    y.push_str(&format!(
                        "session: {session}\nmonitor: {monitor}\nsnapshot: {snapshot}\n"
                    ));
                    let stall = stall
                        .map(|d| format!(", stall_after: {d}"))
                        .unwrap_or_default();
                    y.push_str(&format!("defaults: {{ restart: {restart}{stall} }}\n"));
                    y.push_str("agents:\n");
                    for a in agents {
                        y.push_str(&a);
                    }
                    y
                },
            )
    }

    /// What the runtime relies on in an accepted layout.
    fn honourable(l: &Layout) -> Result<(), String> {
        let periods = [
            l.monitor.tick,
            l.monitor.resources,
            l.monitor.maintenance,
            l.snapshot.interval,
            l.monitor.error_storm_window,
            l.monitor.leak_window,
        ];
        for p in periods {
            if p.0.is_zero() || p.0 > MAX_DURATION {
                return Err(format!("period {p}"));
            }
        }
        for a in &l.agents {
            let r = &a.restart;
            for d in [
                r.window,
                r.min_uptime,
                r.backoff_initial,
                r.backoff_max,
                a.stall_after,
            ] {
                if d.0 > MAX_DURATION {
                    return Err(format!("{}: duration {d}", a.name));
                }
            }
            if a.stall_after.0.is_zero() {
                return Err(format!("{}: stall_after 0", a.name));
            }
            let n = a.name.as_str();
            if n.len() > schema::MAX_NAME_LEN || ["all", "user", "orch"].contains(&n) {
                return Err(format!("name {n}"));
            }
            if a.command.as_deref().is_some_and(|c| c.contains('\0')) {
                return Err(format!("{n}: NUL in command"));
            }
        }
        if l.session.as_str().len() > schema::MAX_NAME_LEN {
            return Err("session name".into());
        }
        Ok(())
    }

    fn check(text: &str) -> Result<(), TestCaseError> {
        let d = dir();
        match parse(text, "t.yaml", d.path()) {
            Ok(l) => prop_assert!(honourable(&l).is_ok(), "{:?} for {text:?}", honourable(&l)),
            Err(errors) => {
                prop_assert!(!errors.0.is_empty());
                for e in &errors.0 {
                    prop_assert!(
                        e.position.is_some() || e.message.contains("larger than"),
                        "no position: {e} for {text:?}"
                    );
                    prop_assert!(!e.message.is_empty());
                }
            }
        }
        Ok(())
    }

    /// A generator that never made an acceptable layout would test nothing.
    #[test]
    fn the_generator_makes_both_good_and_bad_layouts() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut good, mut bad) = (0, 0);
        for _ in 0..400 {
            let text = layout().new_tree(&mut runner).expect("value").current();
            match parse(&text, "t.yaml", dir().path()) {
                Ok(_) => good += 1,
                Err(_) => bad += 1,
            }
        }
        assert!(good >= 20 && bad >= 20, "{good} accepted, {bad} refused");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn generated_layouts_are_accepted_only_when_honourable(text in layout()) {
            check(&text)?;
        }


        #[test]
        fn any_text_parses_or_is_refused_with_a_position(text in "\\PC{0,200}") {
            check(&text)?;
        }

        #[test]
        fn nesting_of_any_depth_is_refused_at_once(depth in 0usize..5000, open in "[\\[{]") {
            let text = format!("session: s\nmonitor: {}\nagents: []\n", open.repeat(depth));
            let started = std::time::Instant::now();
            let d = dir();
            let _ = parse(&text, "t.yaml", d.path());
            prop_assert!(started.elapsed() < std::time::Duration::from_secs(1));
        }
    }
}
