//! What a terminal user expects of any command-line tool: `--version` with the commit,
//! shell completions, a man page, and NO_COLOR.

use std::process::{Command, Output};

fn orch(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .envs(env.iter().copied())
        .output()
        .expect("run orch")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let v = stdout(&orch(&["--version"], &[]));
    let version = env!("CARGO_PKG_VERSION");
    assert!(v.starts_with(&format!("orch {version}")), "{v}");
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match head {
        // Built in a git checkout: its commit (the build reruns when HEAD moves).
        Some(commit) => assert_eq!(v.trim(), format!("orch {version} ({commit})")),
        // A tarball build says the version alone.
        None => assert_eq!(v.trim(), format!("orch {version}")),
    }
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(&orch(&["completions", shell], &[]));
        assert!(script.contains("orch"), "{shell}");
        for sub in ["demo", "rollback", "send"] {
            assert!(script.contains(sub), "{shell} completes {sub}");
        }
    }
    let bad = orch(&["completions", "tcsh"], &[]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn a_man_page_from_the_clap_definitions() {
    let page = stdout(&orch(&["man"], &[]));
    assert!(page.contains(".TH orch 1"), "{page}");
    assert!(page.contains("demo"), "the commands are listed");
    let sub = stdout(&orch(&["man", "rollback", "approve"], &[]));
    assert!(sub.contains(".TH orch-rollback-approve 1"), "{sub}");
    let missing = orch(&["man", "nope"], &[]);
    assert_eq!(missing.status.code(), Some(2));
}

/// clap colours help and errors when asked to (CLICOLOR_FORCE, or a terminal); NO_COLOR
/// wins over both.
#[test]
fn no_color_is_honoured() {
    let forced = orch(&["--help"], &[("CLICOLOR_FORCE", "1")]);
    assert!(
        stdout(&forced).contains('\u{1b}'),
        "help is coloured when forced"
    );
    for args in [&["--help"][..], &["demo", "--help"], &["no-such-command"]] {
        let plain = orch(args, &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]);
        let all = [plain.stdout, plain.stderr].concat();
        assert!(
            !String::from_utf8_lossy(&all).contains('\u{1b}'),
            "{args:?} coloured despite NO_COLOR"
        );
    }
}
