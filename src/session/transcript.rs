//! Transcripts: everything an agent's pane prints, appended to
//! `<state-dir>/<session>/transcripts/<agent>.log` by `pipe-pane`, across restarts. It
//! covers the gap between snapshots: a crash loses nothing the pane printed.
//!
//! The folder is 0700 and the file 0600 before tmux opens it. What a pane prints goes
//! through `orch transcript` ([`run_filter`]), which redacts secrets (built-in patterns
//! and `snapshot.redact`) line by line before anything reaches the disk. A file over
//! [`ROTATE_BYTES`] when its pane (re)starts becomes `<agent>.log.1`, replacing an older
//! one.

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::state::{StateDir, create_private_dir};

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
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating the transcript {}", path.display()))?;
    Ok(path)
}

/// The command `pipe-pane` runs to feed a transcript through the redacting filter; the
/// file is appended as its last argument. `None` when orch cannot name its own binary.
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

/// `orch transcript FILE`: appends stdin to FILE with secrets redacted, a line at a time
/// (a PEM private key block is held until its END line, so it is redacted whole), until
/// stdin ends.
pub fn run_filter(redact: &[String], file: &Path) -> Result<()> {
    use std::io::{BufRead, Write};
    let redactor = crate::snapshot::redact::Redactor::new(redact)?;
    let mut out = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("opening the transcript {}", file.display()))?;
    let mut input = std::io::stdin().lock();
    let mut line = Vec::new();
    let mut held = Vec::new();
    loop {
        line.clear();
        let n = input.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        let in_pem =
            !held.is_empty() || contains(&line, b"-----BEGIN") && contains(&line, b"PRIVATE KEY");
        if in_pem {
            held.extend_from_slice(&line);
            // Give up holding after 64 KiB: a key is far smaller; this is not one.
            if !contains(&line, b"-----END") && held.len() < 64 * 1024 {
                continue;
            }
            out.write_all(&redactor.redact_bytes(&held))?;
            held.clear();
        } else {
            out.write_all(&redactor.redact_bytes(&line))?;
        }
        out.flush()?;
    }
    out.write_all(&redactor.redact_bytes(&held))?;
    Ok(())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn rotate_if_big(path: &Path, limit: u64) -> Result<()> {
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
