//! Transcripts: everything an agent's pane prints, appended to
//! `<state-dir>/<session>/transcripts/<agent>.log` by `pipe-pane`, across restarts. It
//! covers the gap between snapshots: a crash loses nothing the pane printed.
//!
//! The folder is 0700 and the file 0600 before tmux opens it. `pipe-pane` starts
//! `orch transcript` ([`hand_over`]), which passes the pipe to the session's one
//! transcript [`writer`] process and exits; the writer redacts secrets (built-in patterns
//! and `snapshot.redact`) line by line ([`lines`]) before anything reaches the disk. A
//! file over [`ROTATE_BYTES`], when its pane (re)starts or as the writer appends past
//! it, becomes `<agent>.log.1`, replacing an older one. If the writer dies, the supervisor pipes the panes again
//! ([`panes_to_repipe`]).

mod handover;
mod lines;
pub mod writer;

use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::state::{StateDir, create_private_dir};
use crate::tmux::Pane;
use handover::{Failed, Request};

pub const ROTATE_BYTES: u64 = 50 * 1024 * 1024;

/// Where an agent's transcript lives (creates nothing).
pub fn transcript_path(state: &StateDir, session: &str, agent: &str) -> PathBuf {
    state
        .root()
        .join(session)
        .join("transcripts")
        .join(format!("{agent}.log"))
}

/// Makes the transcript ready for a pane that is about to start: private folder, rotation
/// when too big, the file created 0600. Returns its path.
pub fn prepare_transcript(state: &StateDir, session: &str, agent: &str) -> Result<PathBuf> {
    let path = transcript_path(state, session, agent);
    let dir = path.parent().context("a transcript has a folder")?;
    state.session_dir(session)?;
    create_private_dir(dir)?;
    rotate_if_big(&path, ROTATE_BYTES)?;
    crate::state::open_append(&path)?;
    Ok(path)
}

/// The command `pipe-pane` runs to hand a pane's output to the transcript writer, which
/// redacts it; the file is appended as its last argument. `None` when orch cannot name its
/// own binary.
pub fn filter_command(redact: &[String]) -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    // `exec`: no shell stays behind for every pane.
    let mut cmd = format!("exec {}", crate::tmux::shell_quote(&exe.to_string_lossy()));
    cmd.push_str(" transcript");
    for p in redact {
        cmd.push_str(" --redact ");
        cmd.push_str(&crate::tmux::shell_quote(p));
    }
    Some(cmd)
}

/// `orch transcript FILE`, the `pipe-pane` child: hands the pane's pipe (its stdin) to the
/// session's transcript writer and exits, starting the writer first when none answers.
/// Retries for a few seconds: a writer may be starting, or exiting after idling.
pub fn hand_over(redact: &[String], file: &Path) -> Result<()> {
    let dir = file.parent().context("a transcript has a folder")?;
    // A socket's path may be at most 107 bytes: reach it relative to its folder, so a
    // deep state dir works too.
    std::env::set_current_dir(dir)
        .with_context(|| format!("entering the transcripts folder {}", dir.display()))?;
    let dir = &std::env::current_dir().context("naming the transcripts folder")?;
    let socket = Path::new(writer::SOCKET);
    let name = file.file_name().context("a transcript is a file")?;
    let request = Request {
        file: dir.join(name),
        redact: redact.to_vec(),
    };
    let stdin = std::io::stdin();
    let deadline = Instant::now() + HAND_OVER_WITHIN;
    loop {
        match handover::send(socket, stdin.as_fd(), &request) {
            Ok(()) => return Ok(()),
            Err(Failed::Refused(why)) => bail!(
                "the transcript writer refused {}: {why}; check the folder's permissions and the layout's snapshot.redact patterns",
                file.display()
            ),
            Err(Failed::NoWriter) => writer::start(dir)?,
            // The writer was exiting (idle) as we arrived: the next one will take it.
            Err(Failed::Lost) => {}
        }
        if Instant::now() >= deadline {
            bail!(
                "no transcript writer answered on {} within {HAND_OVER_WITHIN:?}; run `orch transcript-writer {}` by hand to see why it does not start",
                dir.join(writer::SOCKET).display(),
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

const HAND_OVER_WITHIN: Duration = Duration::from_secs(5);

/// Live agent panes of `session` whose output no longer reaches a transcript: their pipe
/// is off (tmux closed it when a write failed), or every pane's is when the writer died
/// (tmux only notices a dead pipe when the pane next prints, and that output is lost).
pub fn panes_to_repipe<'a>(
    panes: &'a [Pane],
    session: &str,
    writer_died: bool,
) -> impl Iterator<Item = &'a Pane> {
    panes.iter().filter(move |p| {
        p.session == session && p.agent.is_some() && !p.dead && (writer_died || !p.pipe)
    })
}

/// Whether the writer of the session's transcripts died without cleaning up.
pub fn writer_died(state: &StateDir, session: &str) -> bool {
    writer::died(&state.root().join(session).join("transcripts"))
}

pub(super) fn rotate_if_big(path: &Path, limit: u64) -> Result<()> {
    let Ok(meta) = fs::metadata(path) else {
        return Ok(());
    };
    if meta.len() <= limit {
        return Ok(());
    }
    let mut old = path.as_os_str().to_owned();
    old.push(".1");
    fs::rename(path, &old).with_context(|| format!("rotating {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn live_agent_panes_without_a_pipe_are_piped_again_or_all_when_the_writer_died() {
        let pane = |id: &str, session: &str, agent: Option<&str>, dead: bool, pipe: bool| Pane {
            dead,
            pipe,
            ..Pane::sample(id, session, agent)
        };
        let panes = [
            pane("%1", "s", Some("a"), false, true),
            pane("%2", "s", Some("b"), false, false),
            pane("%3", "s", Some("c"), true, false),
            pane("%4", "s", None, false, false),
            pane("%5", "other", Some("a"), false, false),
        ];
        let ids = |died| -> Vec<&str> {
            panes_to_repipe(&panes, "s", died)
                .map(|p| p.id.as_str())
                .collect()
        };
        assert_eq!(ids(false), ["%2"]);
        assert_eq!(ids(true), ["%1", "%2"]);
    }

    #[test]
    fn created_private_and_rotated_when_big() {
        let tmp = tempfile::tempdir().expect("tmp");
        let state = StateDir::resolve(Some(tmp.path().to_owned())).expect("state");
        let path = prepare_transcript(&state, "s", "a").expect("prepare");
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("dir")), 0o700);
        fs::write(&path, b"0123456789").expect("write");
        rotate_if_big(&path, 100).expect("rotate");
        assert!(path.exists());
        rotate_if_big(&path, 5).expect("rotate");
        assert!(!path.exists());
        assert_eq!(
            fs::read(tmp.path().join("s/transcripts/a.log.1")).expect("old"),
            b"0123456789"
        );
    }
}
