//! The state directory: `--state-dir`/`ORCH_STATE_DIR`, else `$XDG_STATE_HOME/orch`, else
//! `~/.local/state/orch`; one folder per session inside it. Everything orch keeps about a
//! session lives there, so every folder is created mode 0700 and every file 0600 whatever
//! the umask: transcripts and snapshots hold whatever the agents printed, secrets included.
//!
//! This is the one place that opens files for writing. Nothing here follows a symlink in
//! the last component of a path it writes, and what it opens is checked on the opened
//! descriptor (a regular file or folder of ours), so a link or a FIFO planted in the
//! state dir is refused with [`UnsafePath`] instead of written through.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rustix::fs::{FileType, Mode, OFlags};

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

/// Why orch will not use a path in its state dir. Every file and folder orch keeps is
/// private and its own: a symlink could send its writes (and chmods) anywhere, and a
/// folder of another user could be read or swapped by them.
#[derive(Debug, thiserror::Error)]
pub enum UnsafePath {
    #[error(
        "{} is a symbolic link, which orch does not follow in its state dir; remove the link, or point --state-dir (ORCH_STATE_DIR) at the real directory",
        path.display()
    )]
    Symlink { path: PathBuf },
    #[error(
        "{} belongs to another user (uid {owner}, not {uid}); pass --state-dir with a folder of your own",
        path.display()
    )]
    Foreign { path: PathBuf, owner: u32, uid: u32 },
    #[error("{} is not a {expected}; move it away", path.display())]
    WrongType {
        path: PathBuf,
        expected: &'static str,
    },
}

/// Creates `dir` (and missing parents) mode 0700 whatever the umask, and tightens an
/// existing one we own. The folder itself must not be a symlink nor belong to another
/// user (checked on the opened folder, not on its name); folders above the first one
/// that already exists are the user's business.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use rustix::io::Errno;
    match rustix::fs::mkdir(dir, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(Errno::NOENT) => {
            let parent = dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .with_context(|| format!("creating {}", dir.display()))?;
            create_private_dir(parent)?;
            match rustix::fs::mkdir(dir, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => {
                    return Err(std::io::Error::from(e))
                        .with_context(|| format!("creating {}", dir.display()));
                }
            }
        }
        Err(e) => {
            return Err(std::io::Error::from(e))
                .with_context(|| format!("creating {}", dir.display()));
        }
    }
    let fd = open_checked(dir, OFlags::RDONLY | OFlags::DIRECTORY, Kind::Dir)?;
    set_mode(&fd, dir, 0o700)
}

/// Checks a folder orch keeps state in without creating or changing anything: `Ok` if it
/// is missing or is a private-enough folder of ours (the mode is not judged here).
pub fn check_dir(dir: &Path) -> Result<(), UnsafePath> {
    match open_checked(dir, OFlags::RDONLY | OFlags::DIRECTORY, Kind::Dir) {
        Ok(_) => Ok(()),
        Err(e) => match e.downcast::<UnsafePath>() {
            Ok(unsafe_path) => Err(unsafe_path),
            Err(_) => Ok(()),
        },
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

/// Opens `path` without following a symlink in its last component, then checks on the
/// opened descriptor that it is a `kind` owned by us. `O_NONBLOCK`, so a FIFO put where
/// a file belongs is refused instead of blocking the open.
fn open_checked(path: &Path, flags: OFlags, kind: Kind) -> Result<OwnedFd> {
    use rustix::io::Errno;
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = match rustix::fs::open(path, flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => fd,
        Err(Errno::LOOP) => return Err(UnsafePath::Symlink { path: path.into() }.into()),
        Err(Errno::NOTDIR) if kind == Kind::Dir && is_symlink(path) => {
            return Err(UnsafePath::Symlink { path: path.into() }.into());
        }
        Err(Errno::NOTDIR) if kind == Kind::Dir => {
            return Err(UnsafePath::WrongType {
                path: path.into(),
                expected: "folder",
            }
            .into());
        }
        Err(Errno::NXIO | Errno::ISDIR) => {
            return Err(UnsafePath::WrongType {
                path: path.into(),
                expected: "regular file",
            }
            .into());
        }
        Err(e) => {
            return Err(std::io::Error::from(e))
                .with_context(|| format!("opening {}", path.display()));
        }
    };
    let st = rustix::fs::fstat(&fd).with_context(|| format!("reading {}", path.display()))?;
    let (wanted, expected) = match kind {
        Kind::Dir => (FileType::Directory, "folder"),
        Kind::File => (FileType::RegularFile, "regular file"),
    };
    if FileType::from_raw_mode(st.st_mode) != wanted {
        return Err(UnsafePath::WrongType {
            path: path.into(),
            expected,
        }
        .into());
    }
    let uid = rustix::process::geteuid().as_raw();
    if st.st_uid != uid {
        return Err(UnsafePath::Foreign {
            path: path.into(),
            owner: st.st_uid,
            uid,
        }
        .into());
    }
    Ok(fd)
}

fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Gives an opened file or folder exactly `mode`: the umask decides nothing here.
fn set_mode(fd: &OwnedFd, path: &Path, mode: u32) -> Result<()> {
    let st = rustix::fs::fstat(fd).with_context(|| format!("reading {}", path.display()))?;
    if st.st_mode & 0o7777 != mode {
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
            .with_context(|| format!("making {} private (mode {mode:04o})", path.display()))?;
    }
    Ok(())
}

/// Opens (creating it) a private (0600) regular file of ours at `path`, never through a
/// symlink, whatever the umask.
fn open_private(path: &Path, flags: OFlags) -> Result<fs::File> {
    let fd = open_checked(path, flags | OFlags::CREATE, Kind::File)?;
    set_mode(&fd, path, 0o600)?;
    Ok(fs::File::from(fd))
}

/// Writes `bytes` to a private (0600) file at `path`, replacing what it held; not synced
/// (for files a crash may lose, like a restore's replay files).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<fs::File> {
    use std::io::Write;
    // Truncated only once it is known to be our own regular file.
    let mut f = open_private(path, OFlags::WRONLY)?;
    f.set_len(0)
        .with_context(|| format!("emptying {}", path.display()))?;
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

/// Opens `path` for appending (and reading), creating it private (0600): journals, logs,
/// transcripts.
pub fn open_append(path: &Path) -> Result<fs::File> {
    open_private(path, OFlags::RDWR | OFlags::APPEND)
}

/// Appends `line` and its newline to a file opened by [`open_append`] in ONE write (so
/// concurrent appenders never interleave), first closing off a torn last line (a crash
/// or a full disk cut the previous write short) with a newline of its own, so the new
/// record never glues onto the fragment.
pub fn append_record(file: &mut fs::File, line: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut buf = Vec::with_capacity(line.len() + 2);
    if !ends_with_newline(file)? {
        buf.push(b'\n');
    }
    buf.extend_from_slice(line);
    buf.push(b'\n');
    file.write_all(&buf)
}

/// Whether a file is empty or its last byte is a newline (one byte read at its end).
pub fn ends_with_newline(file: &fs::File) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(true);
    }
    let mut last = [0u8];
    file.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] == b'\n')
}

/// Opens a lock file for reading and writing, creating it 0600, never truncating it (a
/// holder may have written its pid there).
pub fn open_lock_file(path: &Path) -> Result<fs::File> {
    open_private(path, OFlags::RDWR)
}

/// Makes the Unix socket just bound at `path` private (0600). A socket has no descriptor
/// to chmod, so its name is checked first: a socket of ours, not a symlink.
pub fn restrict_socket(path: &Path) -> Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.file_type().is_symlink() {
        return Err(UnsafePath::Symlink { path: path.into() }.into());
    }
    if !meta.file_type().is_socket() {
        return Err(UnsafePath::WrongType {
            path: path.into(),
            expected: "socket",
        }
        .into());
    }
    let uid = rustix::process::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(UnsafePath::Foreign {
            path: path.into(),
            owner: meta.uid(),
            uid,
        }
        .into());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private (mode 0600)", path.display()))
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
    // Unique per writer, threads included, so two writers never share a temp file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    if let Err(e) = write_synced_temp(&tmp, bytes) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path)
            .expect("meta")
            .permissions()
            .mode()
            & 0o7777
    }

    fn unsafe_kind(e: &anyhow::Error) -> Option<&UnsafePath> {
        e.downcast_ref::<UnsafePath>()
    }

    #[test]
    fn folders_are_0700_and_files_0600_even_when_they_existed_looser() {
        let d = tempfile::tempdir().expect("tmp");
        let deep = d.path().join("a/b/c");
        create_private_dir(&deep).expect("create");
        for p in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&d.path().join(p)), 0o700, "{p}");
        }
        fs::set_permissions(&deep, fs::Permissions::from_mode(0o755)).expect("chmod");
        create_private_dir(&deep).expect("again");
        assert_eq!(mode(&deep), 0o700);
        let file = deep.join("f");
        fs::write(&file, "x").expect("write");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
        open_append(&file).expect("append");
        assert_eq!(mode(&file), 0o600);
        atomic_write(&deep.join("g"), b"y").expect("atomic");
        assert_eq!(mode(&deep.join("g")), 0o600);
    }

    #[test]
    fn symlinks_are_refused_and_their_targets_untouched() {
        let d = tempfile::tempdir().expect("tmp");
        let target = d.path().join("target");
        fs::write(&target, "theirs").expect("write");
        fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).expect("chmod");
        let link = d.path().join("link");
        symlink(&target, &link).expect("symlink");
        for result in [
            open_append(&link).map(drop),
            write_private(&link, b"x").map(drop),
            open_lock_file(&link).map(drop),
        ] {
            let e = result.expect_err("refused");
            assert!(
                matches!(unsafe_kind(&e), Some(UnsafePath::Symlink { .. })),
                "{e:#}"
            );
        }
        assert_eq!(fs::read_to_string(&target).expect("read"), "theirs");
        assert_eq!(mode(&target), 0o644);
        let dir_target = d.path().join("elsewhere");
        fs::create_dir(&dir_target).expect("mkdir");
        fs::set_permissions(&dir_target, fs::Permissions::from_mode(0o755)).expect("chmod");
        let dir_link = d.path().join("dirlink");
        symlink(&dir_target, &dir_link).expect("symlink");
        let e = create_private_dir(&dir_link).expect_err("refused");
        assert!(
            matches!(unsafe_kind(&e), Some(UnsafePath::Symlink { .. })),
            "{e:#}"
        );
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(mode(&dir_target), 0o755);
        assert!(matches!(
            check_dir(&dir_link),
            Err(UnsafePath::Symlink { .. })
        ));
        // An atomic write replaces a link with a file of ours, never writes through it.
        atomic_write(&link, b"ours").expect("atomic");
        assert!(
            !fs::symlink_metadata(&link)
                .expect("meta")
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&target).expect("read"), "theirs");
    }

    #[test]
    fn a_fifo_or_a_folder_where_a_file_belongs_is_refused_without_blocking() {
        let d = tempfile::tempdir().expect("tmp");
        let fifo = d.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        let e = open_append(&fifo).expect_err("refused");
        assert!(
            matches!(unsafe_kind(&e), Some(UnsafePath::WrongType { .. })),
            "{e:#}"
        );
        let e = open_append(d.path()).expect_err("a folder");
        assert!(
            matches!(unsafe_kind(&e), Some(UnsafePath::WrongType { .. })),
            "{e:#}"
        );
        let file = d.path().join("file");
        fs::write(&file, "x").expect("write");
        let e = create_private_dir(&file).expect_err("a file");
        assert!(
            matches!(unsafe_kind(&e), Some(UnsafePath::WrongType { .. })),
            "{e:#}"
        );
    }

    #[test]
    fn a_folder_or_file_of_another_user_is_refused() {
        if !rustix::process::geteuid().is_root() {
            return; // only root can give a file away
        }
        let d = tempfile::tempdir().expect("tmp");
        let theirs = d.path().join("theirs");
        fs::create_dir(&theirs).expect("mkdir");
        let file = d.path().join("file");
        fs::write(&file, "x").expect("write");
        for p in [&theirs, &file] {
            std::os::unix::fs::chown(p, Some(4242), Some(4242)).expect("chown");
        }
        let e = create_private_dir(&theirs).expect_err("refused");
        assert!(
            matches!(
                unsafe_kind(&e),
                Some(UnsafePath::Foreign { owner: 4242, .. })
            ),
            "{e:#}"
        );
        assert!(e.to_string().contains("--state-dir"), "{e}");
        let e = open_append(&file).expect_err("refused");
        assert!(
            matches!(unsafe_kind(&e), Some(UnsafePath::Foreign { .. })),
            "{e:#}"
        );
    }
}
