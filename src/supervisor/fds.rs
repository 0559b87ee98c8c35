//! File descriptors for the supervisor's own work, whatever clients do: the soft limit is
//! raised to the hard one at start, and a few descriptors are held in reserve, given up
//! only to let a restart through when the process has none left (`EMFILE`).
//!
//! The control socket caps its connections ([`super::control::MAX_CONNECTIONS`]), so
//! clients alone cannot exhaust the table; the reserve covers everything else that might.

use std::fs::File;

/// Descriptors held back for restarts (a respawn needs a few: tmux's pipes, a pidfd).
pub const RESERVE: usize = 16;

#[derive(Debug, Default)]
pub struct FdReserve {
    held: Vec<File>,
}

impl FdReserve {
    /// Takes [`RESERVE`] descriptors (on `/dev/null`).
    pub fn new() -> FdReserve {
        let mut r = FdReserve::default();
        r.refill();
        r
    }

    /// Gives the reserve back to the process, for one operation that needs it.
    pub fn release(&mut self) {
        self.held.clear();
    }

    /// Takes the reserve again (as much of it as there is room for).
    pub fn refill(&mut self) {
        while self.held.len() < RESERVE {
            match File::open("/dev/null") {
                Ok(f) => self.held.push(f),
                Err(_) => break,
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// Raises the soft limit on open files to the hard limit: 200 agents need a pidfd each,
/// and tmux calls need pipes.
pub fn raise_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

/// Whether an error comes from the process (or system) running out of descriptors.
pub fn is_exhaustion(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|code| {
                code == rustix::io::Errno::MFILE.raw_os_error()
                    || code == rustix::io::Errno::NFILE.raw_os_error()
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_released_and_taken_again() {
        let mut r = FdReserve::new();
        assert_eq!(r.len(), RESERVE);
        r.release();
        assert!(r.is_empty());
        r.refill();
        assert_eq!(r.len(), RESERVE);
        let emfile = anyhow::Error::from(std::io::Error::from_raw_os_error(
            rustix::io::Errno::MFILE.raw_os_error(),
        ))
        .context("spawning tmux");
        assert!(is_exhaustion(&emfile));
        assert!(!is_exhaustion(&anyhow::anyhow!("other")));
    }
}
