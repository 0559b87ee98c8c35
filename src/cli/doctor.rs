//! `orch doctor`: checks what orch depends on, each with a hint to fix it.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::Result;

use super::{Context, out};
use crate::tmux;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Warn,
    Fail,
}

struct Check {
    verdict: Verdict,
    what: &'static str,
    detail: String,
}

fn check(verdict: Verdict, what: &'static str, detail: impl Into<String>) -> Check {
    Check {
        verdict,
        what,
        detail: detail.into(),
    }
}

pub(super) fn run(ctx: &Context) -> Result<ExitCode> {
    let mut checks = vec![check_tmux(), check_git()];
    checks.push(match ctx.state() {
        Ok(state) => check_state_dir(state.root()),
        Err(e) => check(Verdict::Fail, "state dir", format!("{e:#}")),
    });
    checks.push(check_socket(ctx));
    checks.push(match ctx.layout() {
        Ok(l) => check(
            Verdict::Ok,
            "layout",
            format!("session {}, {} agents", l.session, l.agents.len()),
        ),
        Err(e) => check(Verdict::Fail, "layout", format!("{e:#}")),
    });
    for c in &checks {
        let tag = match c.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        out!("{tag}  {:<10} {}", c.what, c.detail)?;
    }
    let failed = checks.iter().any(|c| c.verdict == Verdict::Fail);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn check_tmux() -> Check {
    match tmux::version() {
        Ok((text, Some(v))) if v >= (3, 2) => check(Verdict::Ok, "tmux", text),
        Ok((text, Some(_))) => check(
            Verdict::Fail,
            "tmux",
            format!("{text} is too old; install tmux 3.2 or newer"),
        ),
        Ok((text, None)) => check(
            Verdict::Warn,
            "tmux",
            format!("cannot read the version from {text:?}; orch needs tmux 3.2 or newer"),
        ),
        Err(e) => check(Verdict::Fail, "tmux", e.to_string()),
    }
}

fn check_git() -> Check {
    match Command::new("git")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => check(
            Verdict::Ok,
            "git",
            String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        ),
        _ => check(
            Verdict::Fail,
            "git",
            "git was not found on PATH; install git (e.g. `apt-get install git`)",
        ),
    }
}

fn check_state_dir(root: &Path) -> Check {
    // A link anywhere orch would write is refused by `state` too: say so here first.
    let links = std::iter::once(root.to_path_buf()).chain(
        std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path()),
    );
    for path in links {
        if let Err(e) = crate::state::check_dir(&path)
            && matches!(e, crate::state::UnsafePath::Symlink { .. })
        {
            return check(Verdict::Fail, "state dir", e.to_string());
        }
    }
    let meta = match std::fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return check(
                Verdict::Ok,
                "state dir",
                format!("{} (created mode 0700 on first use)", root.display()),
            );
        }
        Err(e) => {
            return check(
                Verdict::Fail,
                "state dir",
                format!("{}: {e}", root.display()),
            );
        }
    };
    if !meta.is_dir() {
        return check(
            Verdict::Fail,
            "state dir",
            format!(
                "{} is not a directory; move it away or pass --state-dir",
                root.display()
            ),
        );
    }
    let uid = rustix::process::getuid().as_raw();
    let mut dirs = vec![(root.to_path_buf(), meta)];
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if let Ok(m) = entry.metadata()
            && m.is_dir()
        {
            dirs.push((entry.path(), m));
        }
    }
    let bad: Vec<&PathBuf> = dirs
        .iter()
        .filter(|(_, m)| m.permissions().mode() & 0o077 != 0)
        .map(|(p, _)| p)
        .collect();
    let foreign: Vec<&PathBuf> = dirs
        .iter()
        .filter(|(_, m)| m.uid() != uid)
        .map(|(p, _)| p)
        .collect();
    if let Some(p) = foreign.first() {
        return check(
            Verdict::Fail,
            "state dir",
            format!(
                "{} belongs to another user; pass --state-dir with a folder of your own",
                p.display()
            ),
        );
    }
    if let Some(p) = bad.first() {
        return check(
            Verdict::Fail,
            "state dir",
            format!(
                "{} is readable by others; run `chmod 700 {}`",
                p.display(),
                p.display()
            ),
        );
    }
    check(
        Verdict::Ok,
        "state dir",
        format!("{} (mode 0700)", root.display()),
    )
}

fn check_socket(ctx: &Context) -> Check {
    let tmux = ctx.tmux();
    let name = tmux.socket_name();
    match tmux.server_info() {
        Ok(Some(info)) => check(
            Verdict::Ok,
            "socket",
            format!(
                "{name}: server pid {} (tmux {}) at {}",
                info.pid, info.version, info.socket_path
            ),
        ),
        Ok(None) => {
            let dir = std::env::var_os("TMUX_TMPDIR")
                .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
            let path = dir
                .join(format!("tmux-{}", rustix::process::getuid().as_raw()))
                .join(&name);
            match std::fs::symlink_metadata(&path) {
                // tmux leaves its socket file behind when the server exits and reuses it.
                Err(_) => check(
                    Verdict::Ok,
                    "socket",
                    format!("{name}: no server yet; `orch layout up` starts one"),
                ),
                Ok(m) if m.file_type().is_socket() => check(
                    Verdict::Ok,
                    "socket",
                    format!(
                        "{name}: no server running; `orch layout up` starts one at {}",
                        path.display()
                    ),
                ),
                Ok(_) => check(
                    Verdict::Fail,
                    "socket",
                    format!(
                        "{} is not a socket; move it away or use another --socket",
                        path.display()
                    ),
                ),
            }
        }
        Err(e) => check(Verdict::Fail, "socket", e.to_string()),
    }
}
