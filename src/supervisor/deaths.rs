//! Noticing process deaths at once: a pidfd per agent process (readable ~0.25 ms after
//! the process dies, even though tmux, not orch, is its parent), all waited on by one
//! epoll thread. One thread for any number of agents; nothing polls.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustix::event::epoll;
use rustix::process::{Pid, PidfdFlags, pidfd_open};

type Report = Box<dyn Fn(String, u32) + Send + Sync>;
/// Watched processes by epoll token: agent, pid, and the pidfd kept open while watched.
type Watched = Arc<Mutex<HashMap<u64, (String, u32, OwnedFd)>>>;

/// Watches processes and reports each death once, as `(agent, pid)`.
pub struct DeathWatch {
    epoll: Arc<OwnedFd>,
    watched: Watched,
    next: AtomicU64,
    report: Arc<Report>,
}

impl DeathWatch {
    pub fn start(
        report: impl Fn(String, u32) + Send + Sync + 'static,
    ) -> std::io::Result<DeathWatch> {
        let epoll = Arc::new(epoll::create(epoll::CreateFlags::CLOEXEC)?);
        let watched: Watched = Arc::default();
        let report: Arc<Report> = Arc::new(Box::new(report));
        let (ep, map, rep) = (epoll.clone(), watched.clone(), report.clone());
        std::thread::Builder::new()
            .name("orch-deaths".into())
            .spawn(move || {
                let mut events = Vec::with_capacity(64);
                loop {
                    events.clear();
                    if epoll::wait(&*ep, rustix::buffer::spare_capacity(&mut events), None).is_err()
                    {
                        continue; // EINTR
                    }
                    for ev in &events {
                        let entry = map.lock().ok().and_then(|mut m| m.remove(&ev.data.u64()));
                        // Dropping the pidfd also takes it out of the epoll set.
                        if let Some((agent, pid, _fd)) = entry {
                            rep(agent, pid);
                        }
                    }
                }
            })?;
        Ok(DeathWatch {
            epoll,
            watched,
            next: AtomicU64::new(1),
            report,
        })
    }

    /// Reports the death of `pid`; at once if it is already gone. A pidfd that cannot be
    /// opened for another reason (no descriptors left) reports nothing: a live agent must
    /// never pass for dead, and the reconciliation still sees its death.
    pub fn watch(&self, agent: &str, pid: u32) {
        let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
            (self.report)(agent.to_owned(), pid);
            return;
        };
        let fd = match pidfd_open(p, PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::SRCH) => {
                (self.report)(agent.to_owned(), pid);
                return;
            }
            Err(e) => {
                tracing::warn!(agent, pid, "cannot watch the process ({e}); the tick will");
                return;
            }
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let added = epoll::add(
            &*self.epoll,
            &fd,
            epoll::EventData::new_u64(id),
            epoll::EventFlags::IN | epoll::EventFlags::ONESHOT,
        );
        match (added, self.watched.lock()) {
            (Ok(()), Ok(mut map)) => {
                map.insert(id, (agent.to_owned(), pid, fd));
            }
            _ => tracing::warn!(agent, pid, "cannot watch the process; the tick will"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn reports_a_death_once() {
        let (tx, rx) = mpsc::channel();
        let watch = DeathWatch::start(move |agent, pid| {
            let _ = tx.send((agent, pid));
        })
        .expect("epoll");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn");
        let pid = child.id();
        watch.watch("a", pid);
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "alive: no report"
        );
        child.kill().expect("kill");
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).expect("reported"),
            ("a".to_owned(), pid)
        );
        let _ = child.wait();
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "once");
        // A pid that is already gone is reported at once.
        watch.watch("b", pid);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(1)).expect("reported"),
            ("b".to_owned(), pid)
        );
    }
}
