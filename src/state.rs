//! The state directory: `--state-dir`/`ORCH_STATE_DIR`, else `$XDG_STATE_HOME/orch`, else
//! `~/.local/state/orch`; one folder per session inside it. Everything orch keeps about a
//! session lives there, so every folder is created mode 0700: transcripts and snapshots
//! hold whatever the agents printed, secrets included.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Resolves the state dir from the option (or its environment variable) and the XDG
    /// rules. Creates nothing.
    pub fn resolve(arg: Option<PathBuf>) -> Result<Self> {
        let root = match arg {
            Some(dir) => std::path::absolute(&dir)
                .with_context(|| format!("resolving the state dir {}", dir.display()))?,
            None => match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
                Some(xdg) => PathBuf::from(xdg).join("orch"),
                None => {
                    let home = std::env::var_os("HOME").filter(|v| !v.is_empty()).context(
                        "neither --state-dir, ORCH_STATE_DIR, XDG_STATE_HOME nor HOME is set; pass --state-dir DIR",
                    )?;
                    PathBuf::from(home).join(".local/state/orch")
                }
            },
        };
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<state-dir>/<session>/`, created (with the state dir itself) mode 0700.
    pub fn session_dir(&self, session: &str) -> Result<PathBuf> {
        let dir = self.root.join(session);
        create_private_dir(&self.root)?;
        create_private_dir(&dir)?;
        Ok(dir)
    }

    /// Where the git worktrees of a session's agents live.
    pub fn worktrees_dir(&self, session: &str) -> PathBuf {
        self.root.join(session).join("worktrees")
    }
}

/// Creates `dir` (and missing parents) mode 0700, and tightens an existing one we own.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let meta = fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (mode 0700)", dir.display()))?;
    }
    Ok(())
}

/// Writes `bytes` to a private (0600) file at `path`, replacing what it held; not synced
/// (for files a crash may lose, like a restore's replay files).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<fs::File> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(f)
}

/// Writes `bytes` to a new private (0600) file at `tmp` and syncs it to disk: the first
/// half of every atomic write here (the caller then renames or links it into place).
pub fn write_synced_temp(tmp: &Path, bytes: &[u8]) -> Result<()> {
    write_private(tmp, bytes)?
        .sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))
}

/// Opens `path` for appending, creating it private (0600): journals, logs, transcripts.
pub fn open_append(path: &Path) -> Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Opens a lock file for reading and writing, creating it 0600, never truncating it (a
/// holder may have written its pid there).
pub fn open_lock_file(path: &Path) -> Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Opens (creating it 0600) and exclusively locks `path`, waiting for another holder;
/// the lock lasts as long as the returned file.
pub fn lock_exclusive(path: &Path) -> Result<fs::File> {
    let file = open_lock_file(path)?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

/// Syncs a folder, so the renames and links done in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// Replaces `path` with `bytes` atomically: a temp file in the same folder, fsync, rename,
/// fsync of the folder. A crash at any moment leaves the old file or the new one, never a
/// torn or empty one. The file is mode 0600.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .context("a file to write has a parent folder")?;
    let name = path
        .file_name()
        .context("a file to write has a name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    if let Err(e) = write_synced_temp(&tmp, bytes) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    sync_dir(dir)
}
