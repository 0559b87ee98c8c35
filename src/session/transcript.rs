//! Transcripts: everything an agent's pane prints, appended to
//! `<state-dir>/<session>/transcripts/<agent>.log` by `pipe-pane`, across restarts. It
//! covers the gap between snapshots: a crash loses nothing the pane printed.
//!
//! The folder is 0700 and the file 0600 before tmux opens it (agents print secrets). A
//! file over [`ROTATE_BYTES`] when its pane (re)starts becomes `<agent>.log.1`, replacing
//! an older one.

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
