//! `orch transcript-writer DIR`: the one process per session that appends every pane's
//! output to its transcript. Each pane's `pipe-pane` child hands its pipe over (see
//! [`super::handover`]) and exits, so a session costs one process, not one per pane.
//!
//! Invariants: at most one writer per transcripts folder, enforced by an flock on
//! [`LOCK`] held for the writer's whole life; the socket file [`SOCKET`] is removed
//! before the lock is released, so a socket file with its lock free is one left by a
//! writer that died ([`died`]). A writer with no pipes and no newcomer for
//! [`IDLE_EXIT`] exits: when the tmux server goes, so does its writer.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::event::epoll;
use rustix::fs::{FlockOperation, flock};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use super::handover::{self, ACK};
use super::lines::Lines;
use crate::snapshot::redact::Redactor;

pub const SOCKET: &str = ".writer.sock";
pub const LOCK: &str = ".writer.lock";
/// Held by whoever is starting a writer, so panes that start together start one.
const START_LOCK: &str = ".writer-start.lock";
/// How long a writer with nothing to write waits for a newcomer before exiting.
pub const IDLE_EXIT: Duration = Duration::from_secs(5);
/// A writer that cannot take the lock within this long leaves the work to its holder.
const LOCK_WAIT: Duration = Duration::from_millis(500);
const LISTENER: u64 = 0;

/// One pane's pipe and where its output goes.
struct Pipe {
    fd: OwnedFd,
    file: Transcript,
    lines: Lines,
    redactor: Rc<Redactor>,
}

/// An agent's transcript file, rotated when it grows past `limit` (an agent that runs for
/// weeks never restarts, which is when `prepare_transcript` rotates).
struct Transcript {
    path: PathBuf,
    file: File,
    len: u64,
    limit: u64,
}

impl Transcript {
    fn open(path: &Path, limit: u64) -> Result<Transcript> {
        let file = crate::state::open_append(path)?;
        let len = file.metadata()?.len();
        Ok(Transcript {
            path: path.to_owned(),
            file,
            len,
            limit,
        })
    }

    /// Appends whole lines (what [`Lines`] hands out), then rotates if the file has grown
    /// past its limit, so a rotated file ends where a line does.
    fn append(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        // A full disk loses transcript lines, never the pane: keep reading its pipe.
        if let Err(e) = self.file.write_all(bytes) {
            tracing::warn!(error = %e, "could not append to a transcript");
            return;
        }
        self.len += bytes.len() as u64;
        if self.len <= self.limit {
            return;
        }
        let rotated = super::rotate_if_big(&self.path, self.limit)
            .map_err(|e| format!("{e:#}"))
            .and_then(|()| crate::state::open_append(&self.path).map_err(|e| format!("{e:#}")));
        match rotated {
            Ok(file) => {
                self.file = file;
                self.len = 0;
            }
            Err(why) => tracing::warn!(why, "could not rotate a transcript"),
        }
    }
}

/// Runs the writer for the transcripts in `dir` until it has been idle for [`IDLE_EXIT`].
/// Returns at once when another writer holds the lock.
pub fn run(dir: &Path) -> Result<()> {
    let Some(lock) = take_lock(dir)? else {
        return Ok(());
    };
    // Bound relative to its folder: a socket's path may be at most 107 bytes.
    std::env::set_current_dir(dir).with_context(|| format!("entering {}", dir.display()))?;
    let socket = Path::new(SOCKET);
    // We hold the lock, so a socket file here is a dead writer's.
    let _ = fs::remove_file(socket);
    let listener = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .context("creating the transcript writer's socket")?;
    rustix::net::bind(&listener, &SocketAddrUnix::new(socket)?)
        .with_context(|| format!("listening on {}", dir.join(SOCKET).display()))?;
    crate::state::restrict_socket(socket)?;
    rustix::net::listen(&listener, 128)?;
    tracing::info!(dir = %dir.display(), "transcript writer started");
    // Two fds per pane (its pipe, its file): the usual soft limit of 1,024 would stop at
    // about 500 agents.
    let mut limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    limit.current = limit.maximum;
    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, limit);

    let result = serve(&listener);
    // Socket first, lock second: a newcomer that finds the lock free never finds a socket
    // that nobody will answer, except one left by a writer that died.
    let _ = fs::remove_file(socket);
    drop(listener);
    drop(lock);
    tracing::info!(dir = %dir.display(), "transcript writer exiting");
    result
}

fn serve(listener: &OwnedFd) -> Result<()> {
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    epoll::add(
        &epoll,
        listener,
        epoll::EventData::new_u64(LISTENER),
        epoll::EventFlags::IN,
    )?;
    let mut pipes: HashMap<u64, Pipe> = HashMap::new();
    let mut redactors: HashMap<Vec<String>, Rc<Redactor>> = HashMap::new();
    let mut next = LISTENER + 1;
    let mut idle_since = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Vec::with_capacity(64);
    loop {
        let timeout = if pipes.is_empty() {
            let left = IDLE_EXIT.saturating_sub(idle_since.elapsed());
            if left.is_zero() {
                return Ok(());
            }
            Some(rustix::event::Timespec::try_from(left)?)
        } else {
            None
        };
        events.clear();
        match epoll::wait(
            &epoll,
            rustix::buffer::spare_capacity(&mut events),
            timeout.as_ref(),
        ) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e).context("waiting for pane output"),
        }
        for ev in &events {
            let token = ev.data.u64();
            if token == LISTENER {
                loop {
                    let conn = match rustix::net::accept_with(listener, SocketFlags::CLOEXEC) {
                        Ok(conn) => conn,
                        Err(rustix::io::Errno::AGAIN) => break,
                        Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => {
                            continue;
                        }
                        Err(e) => {
                            // Out of fds, say: the newcomer waits in the backlog; do not
                            // spin on a listener that stays readable.
                            tracing::warn!(error = %e, "could not accept a transcript handover");
                            std::thread::sleep(Duration::from_millis(100));
                            break;
                        }
                    };
                    idle_since = Instant::now();
                    let Some(pipe) = take_over(&conn, &mut redactors) else {
                        continue;
                    };
                    if let Err(e) = epoll::add(
                        &epoll,
                        &pipe.fd,
                        epoll::EventData::new_u64(next),
                        epoll::EventFlags::IN,
                    ) {
                        handover::answer(&conn, format!("watching the pipe: {e}").as_bytes());
                        continue;
                    }
                    pipes.insert(next, pipe);
                    next += 1;
                    // Only now that the pipe is watched: the asker exits on this answer.
                    handover::answer(&conn, ACK);
                }
                continue;
            }
            let Some(pipe) = pipes.get_mut(&token) else {
                continue;
            };
            match rustix::io::read(&pipe.fd, &mut buf) {
                Ok(n) if n > 0 => {
                    let out = pipe.lines.feed(&buf[..n], &pipe.redactor);
                    pipe.file.append(&out);
                }
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                // The pane's pipe closed (pane gone, re-piped, or tmux exited).
                _ => {
                    if let Some(mut pipe) = pipes.remove(&token) {
                        // Explicitly: the pipe child may still hold its copy of the fd for
                        // an instant, which would keep the closed pipe in the set.
                        let _ = epoll::delete(&epoll, &pipe.fd);
                        let out = pipe.lines.finish(&pipe.redactor);
                        pipe.file.append(&out);
                    }
                    if pipes.is_empty() {
                        idle_since = Instant::now();
                    }
                }
            }
        }
    }
}

/// Reads a handover and opens what it names; refusals are answered here.
fn take_over(conn: &OwnedFd, redactors: &mut HashMap<Vec<String>, Rc<Redactor>>) -> Option<Pipe> {
    let result = (|| -> Result<Pipe, String> {
        let (request, fd) = handover::receive(conn.as_fd())?;
        rustix::io::ioctl_fionbio(&fd, true).map_err(|e| format!("setting up the pipe: {e}"))?;
        let file =
            Transcript::open(&request.file, super::ROTATE_BYTES).map_err(|e| format!("{e:#}"))?;
        let redactor = match redactors.get(&request.redact) {
            Some(r) => r.clone(),
            None => {
                let r = Rc::new(Redactor::new(&request.redact).map_err(|e| format!("{e:#}"))?);
                redactors.insert(request.redact, r.clone());
                r
            }
        };
        Ok(Pipe {
            fd,
            file,
            lines: Lines::default(),
            redactor,
        })
    })();
    match result {
        Ok(pipe) => Some(pipe),
        Err(why) => {
            tracing::warn!(why, "refused a transcript handover");
            handover::answer(conn, why.as_bytes());
            None
        }
    }
}

/// The writer lock, waiting briefly: a pipe child probing [`alive`] holds it for an
/// instant. `None` when another writer keeps it.
fn take_lock(dir: &Path) -> Result<Option<File>> {
    use std::io::Write;
    let mut file = crate::state::open_lock_file(&dir.join(LOCK))?;
    let start = Instant::now();
    while flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        if start.elapsed() > LOCK_WAIT {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Who holds it, for [`holder`]; the lock itself is what counts.
    let _ = file
        .set_len(0)
        .and_then(|()| write!(file, "{}", std::process::id()));
    Ok(Some(file))
}

/// The pid of the writer that holds the lock of `dir`, if one does.
pub fn holder(dir: &Path) -> Option<u32> {
    use std::io::Read;
    let mut file = File::open(dir.join(LOCK)).ok()?;
    if flock(&file, FlockOperation::NonBlockingLockShared).is_ok() {
        return None;
    }
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Whether a writer (running, starting or exiting) holds the lock of `dir`.
pub fn alive(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join(LOCK)) else {
        return false;
    };
    flock(&file, FlockOperation::NonBlockingLockShared).is_err()
}

/// Whether the writer of `dir` died without cleaning up: its socket is there, its lock
/// is free. The panes it served lost their transcript pipes.
pub fn died(dir: &Path) -> bool {
    dir.join(SOCKET).exists() && !alive(dir)
}

/// Starts a writer for `dir` unless one holds the lock already; returns once the new one
/// holds it (or after a second), so a pane starting at the same time finds it.
pub fn start(dir: &Path) -> Result<()> {
    let _starting = crate::state::lock_exclusive(&dir.join(START_LOCK))?;
    if alive(dir) {
        return Ok(());
    }
    spawn(dir)?;
    let since = Instant::now();
    while !alive(dir) && since.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Starts a writer for `dir` that outlives the caller: its own process group (a signal
/// to the pane's group does not reach it), no terminal, no inherited pipe.
fn spawn(dir: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("finding the orch binary")?;
    Command::new(exe)
        .arg("transcript-writer")
        .arg(dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the transcript writer")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_lock_names_its_holder_while_held() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(holder(dir.path()), None, "no lock file");
        let lock = take_lock(dir.path()).expect("lock").expect("free");
        assert_eq!(holder(dir.path()), Some(std::process::id()));
        drop(lock);
        assert_eq!(holder(dir.path()), None, "released");
    }

    #[test]
    fn a_transcript_over_its_limit_rotates_after_a_whole_line() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"old\n").expect("write");
        let mut t = Transcript::open(&path, 10).expect("open");
        t.append(b"12345\n");
        assert_eq!(std::fs::read(&path).expect("read"), b"old\n12345\n");
        t.append(b"next line\n");
        let rotated = dir.path().join("a.log.1");
        assert_eq!(
            std::fs::read(&rotated).expect("rotated"),
            b"old\n12345\nnext line\n"
        );
        t.append(b"after\n");
        assert_eq!(std::fs::read(&path).expect("read"), b"after\n");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_socket_left_without_its_lock_holder_is_a_dead_writer() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(!alive(dir.path()) && !died(dir.path()), "never started");
        let lock = take_lock(dir.path()).expect("lock").expect("free");
        assert!(alive(dir.path()));
        assert!(take_lock(dir.path()).expect("lock").is_none(), "one writer");
        fs::write(dir.path().join(SOCKET), b"").expect("socket stand-in");
        assert!(!died(dir.path()), "running");
        drop(lock);
        assert!(died(dir.path()), "gone, socket left");
    }
}
