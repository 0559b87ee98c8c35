//! The fault suite of issue 10: each test reproduces one of the breaks a hostile user or
//! a failing machine found (hostile layouts, corrupt state, torn journals, symlinks, a
//! full disk, fd exhaustion, orphaned control clients) on a real tmux server, with the
//! real binary, and checks that orch now refuses clearly or degrades without losing
//! anything. One file per kind of fault, under `tests/faults/`.

mod support;

#[path = "faults/control.rs"]
mod control;
#[path = "faults/disk.rs"]
mod disk;
#[path = "faults/files.rs"]
mod files;
#[path = "faults/layout.rs"]
mod layout;
#[path = "faults/messages.rs"]
mod messages;
#[path = "faults/orphans.rs"]
mod orphans;
#[path = "faults/scale.rs"]
mod scale;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::TestEnv;

/// `<state>/<session>`.
fn session_dir(env: &TestEnv, session: &str) -> PathBuf {
    env.state.path().join(session)
}

/// `orch ARGS` run with umask `mask` (set by a shell that then execs orch).
fn orch_with_umask(env: &TestEnv, mask: &str, args: &[&str]) -> Output {
    let cmd = env.orch_command(args);
    let program = cmd.get_program().to_owned();
    let argv: Vec<_> = cmd.get_args().map(ToOwned::to_owned).collect();
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("umask {mask}; exec \"$0\" \"$@\""))
        .arg(program)
        .args(argv)
        .current_dir(env.path());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    sh.stdin(std::process::Stdio::null())
        .output()
        .expect("run orch under sh")
}

/// Every path below `dir` (not following links), `dir` excluded.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
