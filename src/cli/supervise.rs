//! `orch supervise`, `orch events`, and the hidden `orch hook` the tmux hook runs.

use std::io::{Read, Seek};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::{Context, out};
use crate::supervisor::control::{Request, request};
use crate::supervisor::store::{JOURNAL_FILE, journal_records};
use crate::supervisor::{SuperviseOptions, supervise};

pub(super) fn run_supervise(ctx: &Context, background: bool) -> Result<ExitCode> {
    if background {
        crate::supervisor::background::detach();
    }
    let layout = ctx.layout()?;
    let _log = ctx.log_to(&layout)?;
    let exe = std::env::current_exe().context("finding the orch binary for the tmux hook")?;
    let layout_file = match ctx.layout_source()? {
        crate::layout::LayoutSource::File(path) => Some(path),
        crate::layout::LayoutSource::Builtin(_) => None,
    };
    let session_override = ctx.session_override()?;
    let opts = SuperviseOptions {
        exe,
        layout_file,
        session_override,
    };
    supervise(
        layout,
        ctx.tmux(),
        ctx.state()?,
        opts,
        if background {
            Box::new(std::io::sink())
        } else {
            Box::new(std::io::stdout())
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn run_hook(ctx: &Context, session: &str, pane: &str) -> Result<ExitCode> {
    // Runs inside tmux's run-shell: never fail loudly, the reconciliation tick is the
    // safety net anyway.
    let dir = ctx.state()?.root().join(session);
    let _ = request(
        &dir,
        &Request::PaneDied {
            pane: pane.to_owned(),
        },
    );
    Ok(ExitCode::SUCCESS)
}

/// `orch hook activity`: run by an agent CLI's hook inside a pane, whose `ORCH_SESSION`
/// and `ORCH_AGENT` say whose signal it is. Never fails: a hook that errors would be shown
/// to the user by the CLI, and the screen reading carries on without it.
pub(super) fn run_activity_hook(
    ctx: &Context,
    profile: crate::layout::Profile,
    stdin: bool,
    event: Option<&str>,
    payload: Option<&str>,
) {
    // The hook input is one JSON value. Gemini CLI keeps the pipe open after it, so read
    // just that value, and give up after a moment rather than hold the CLI up.
    let json = if stdin {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let input = std::io::BufReader::new(std::io::stdin().lock());
            let value = serde_json::Deserializer::from_reader(input)
                .into_iter::<serde_json::Value>()
                .next()
                .and_then(Result::ok);
            let _ = tx.send(value);
        });
        rx.recv_timeout(std::time::Duration::from_secs(2))
            .ok()
            .flatten()
    } else {
        payload.and_then(|p| serde_json::from_str(p).ok())
    };
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(session), Some(agent)) = (var("ORCH_SESSION"), var("ORCH_AGENT")) else {
        return;
    };
    let Ok(state) = ctx.state() else { return };
    let dir = state.root().join(session);
    if let Err(e) = crate::profile::hooks::report(&dir, &agent, profile, event, json.as_ref()) {
        tracing::debug!("activity hook not delivered: {e:#}");
    }
}

pub(super) fn run_events(ctx: &Context, follow: bool, json: bool) -> Result<ExitCode> {
    let layout = ctx.layout()?;
    let path = ctx
        .state()?
        .root()
        .join(layout.session.as_str())
        .join(JOURNAL_FILE);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && follow => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out!(
                "no events yet for session {} (they appear once `orch supervise` runs)",
                layout.session
            )?;
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut offset = 0u64;
    let mut skipped = 0usize;
    loop {
        if file.is_none() {
            file = std::fs::File::open(&path).ok();
        }
        if let Some(f) = file.as_mut() {
            // A rotated journal starts over.
            if f.metadata().map(|m| m.len()).unwrap_or(0) < offset {
                offset = 0;
                pending.clear();
            }
            f.seek(std::io::SeekFrom::Start(offset))?;
            // Bytes, not text: one line that is not UTF-8 must not hide all the others.
            let mut chunk = Vec::new();
            offset += f.read_to_end(&mut chunk)? as u64;
            pending.extend_from_slice(&chunk);
            if let Some(end) = pending.iter().rposition(|&b| b == b'\n') {
                let whole: Vec<u8> = pending.drain(..=end).collect();
                let (records, bad) = journal_records(&whole);
                skipped += bad;
                for line in records {
                    print_event(line, json)?;
                }
                if bad > 0 && follow {
                    eprintln!(
                        "orch: skipped {bad} line(s) of {} that are not JSON events (torn by a crash or a full disk)",
                        path.display()
                    );
                }
            }
        }
        if !follow {
            // A last line still unterminated: torn, unless it is a whole record.
            let (records, bad) = journal_records(&pending);
            for line in records {
                print_event(line, json)?;
            }
            skipped += bad;
            if skipped > 0 {
                eprintln!(
                    "orch: skipped {skipped} line(s) of {} that are not JSON events (torn by a crash or a full disk)",
                    path.display()
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(100));
        if let (Some(_), Ok(meta)) = (file.as_ref(), std::fs::metadata(&path))
            && meta.len() < offset
        {
            file = std::fs::File::open(&path).ok();
            offset = 0;
            pending.clear();
        }
    }
}

fn print_event(line: &str, json: bool) -> std::io::Result<()> {
    if json {
        return out!("{line}");
    }
    let Ok(serde_json::Value::Object(mut ev)) = serde_json::from_str::<serde_json::Value>(line)
    else {
        return out!("{line}"); // JSON, but not an object: shown as it is
    };
    let text = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let ts = text(ev.remove("ts"));
    let kind = text(ev.remove("kind"));
    let agent = text(ev.remove("agent"));
    let screen = ev.remove("last_screen");
    let rest: Vec<String> = ev
        .into_iter()
        .map(|(k, v)| format!("{k}={}", text(Some(v))))
        .collect();
    out!("{ts}  {kind:<18} {agent:<12} {}", rest.join(" "))?;
    if let Some(serde_json::Value::String(screen)) = screen {
        for l in screen
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            out!("    | {l}")?;
        }
    }
    Ok(())
}
