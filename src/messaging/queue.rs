//! The persistent per-agent message queue: one file per message,
//! `<session-dir>/queue/<agent>/<rank>-<priority>-<seq>.json`, written atomically (temp
//! file, fsync, then a hard link that fails rather than overwrite, so two senders never
//! clobber each other). File names sort in delivery order: priority high > normal > low,
//! then FIFO by `seq` (nanoseconds, bumped past the newest queued message). The queue
//! survives orch restarts; whoever delivers holds the agent's queue lock
//! ([`Queue::lock`]) so a message is never pasted twice.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::replay::ReplayGuard;
use crate::state::create_private_dir;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    High,
    Normal,
    Low,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    fn rank(self) -> u8 {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }
}

/// One queued message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `<seq>-<pid>`: unique and stable from queueing to delivery.
    pub id: String,
    pub from: String,
    pub to: String,
    pub priority: Priority,
    /// Already sanitized (no ESC, no control characters but `\n` and `\t`).
    pub text: String,
    /// Unix milliseconds when it was queued.
    pub queued_at_ms: u64,
    pub seq: u64,
    /// Press Enter after the paste (`--no-enter` clears it).
    #[serde(default = "yes")]
    pub enter: bool,
    /// Wait until the agent is idle or waiting for input (`--when idle`, role
    /// instructions, handovers): as long as it is known to be working, and at most
    /// [`READY_TIMEOUT`] while its activity is unknown.
    #[serde(default)]
    pub when_ready: bool,
    /// A `when_ready` message goes out anyway this long after it was queued (`orch send
    /// --timeout`); `None` waits for as long as the agent works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_within_ms: Option<u64>,
    /// For a restored agent: the history its pane replays first, which must not pass for
    /// the agent being ready (see [`super::replay`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_replay: Option<ReplayGuard>,
}

/// How a queued message is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Press Enter after the paste (`--no-enter` clears it).
    pub enter: bool,
    /// Wait until the agent looks ready (see [`Message::when_ready`]).
    pub when_ready: bool,
    /// See [`Message::ready_within_ms`].
    pub ready_within: Option<std::time::Duration>,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            enter: true,
            when_ready: false,
            ready_within: None,
        }
    }
}

/// How long a `when_ready` message waits while its agent's activity is unknown before it
/// is delivered anyway (an agent CLI whose screens orch cannot read must not starve it).
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn yes() -> bool {
    true
}

/// Where unreadable queue files are moved: `queue/<agent>/corrupt/`.
pub const CORRUPT_DIR: &str = "corrupt";

/// A file in an agent's queue that is not a message (corrupt, truncated, or foreign).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    /// Its file name in the queue (which says its priority and sequence number).
    pub name: String,
    pub path: PathBuf,
    pub error: String,
}

fn read_message(path: &Path) -> Result<Message> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("decoding {}", path.display()))
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
}

impl Message {
    /// The message's file name in its agent's queue: priority rank, priority, sequence.
    pub fn file_name(&self) -> String {
        format!(
            "{}-{}-{:020}.json",
            self.priority.rank(),
            self.priority.as_str(),
            self.seq
        )
    }
}

/// Where a new message goes among those of its priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    First,
    Last,
}

/// The queues of one session.
#[derive(Clone, Debug)]
pub struct Queue {
    dir: PathBuf,
}

/// Held while delivering to one agent; released on drop (an flock, so a killed orch never
/// leaves a stale lock).
#[derive(Debug)]
pub struct AgentLock {
    _file: fs::File,
}

impl Queue {
    /// The queues under `<session-dir>/queue/`; creates nothing yet.
    pub fn new(session_dir: &Path) -> Queue {
        Queue {
            dir: session_dir.join(super::QUEUE_DIR),
        }
    }

    /// The session folder these queues belong to.
    pub fn session_dir(&self) -> Option<PathBuf> {
        self.dir.parent().map(Path::to_path_buf)
    }

    fn agent_dir(&self, agent: &str) -> Result<PathBuf> {
        if agent.is_empty() || agent.contains(['/', '\0']) || agent.starts_with('.') {
            bail!("{agent:?} is not an agent name");
        }
        Ok(self.dir.join(agent))
    }

    /// Queues a message for `to`, pressed with Enter and delivered as soon as it can be;
    /// returns it with its id and sequence number.
    pub fn push(&self, from: &str, to: &str, priority: Priority, text: &str) -> Result<Message> {
        self.push_with(from, to, priority, text, Delivery::default())
    }

    /// Queues a copy of `msg` (from a snapshot) for a restored agent, with its sender,
    /// priority and Enter, behind what is already queued. It waits until the agent looks
    /// ready (`when_ready`, and past `after_replay`) whatever it asked before: after a
    /// restore every agent is a CLI that is just starting, which loses or garbles a paste.
    /// A message still queued under
    /// the same name (the queue outlived the tmux server) is not queued twice.
    pub fn requeue(
        &self,
        msg: &Message,
        after_replay: Option<ReplayGuard>,
    ) -> Result<Option<Message>> {
        if self.contains(msg) {
            let path = self.agent_dir(&msg.to)?.join(msg.file_name());
            match read_message(&path) {
                Ok(_) => return Ok(None),
                // The copy in the queue cannot be read: set it aside, queue the good one.
                Err(e) => {
                    let bad = Unreadable {
                        name: msg.file_name(),
                        path,
                        error: format!("{e:#}"),
                    };
                    let moved = self.quarantine(&msg.to, &bad)?;
                    tracing::warn!(
                        "queued message {} could not be read ({}); moved to {}, queued again from the snapshot",
                        bad.name,
                        bad.error,
                        moved.display()
                    );
                }
            }
        }
        let how = Delivery {
            enter: msg.enter,
            when_ready: true,
            ready_within: None,
        };
        let (from, to, text) = (&msg.from, &msg.to, &msg.text);
        self.push_at(from, to, msg.priority, text, how, Place::Last, after_replay)
            .map(Some)
    }

    /// [`Queue::push`] with the delivery options spelt out.
    pub fn push_with(
        &self,
        from: &str,
        to: &str,
        priority: Priority,
        text: &str,
        how: Delivery,
    ) -> Result<Message> {
        self.push_at(from, to, priority, text, how, Place::Last, None)
    }

    /// [`Queue::push_with`], but ahead of every message already queued for `to` at the
    /// same priority (the handover after a restore, which the agent needs before older
    /// work makes sense), held while `after_replay` says the pane shows only its replay.
    pub fn push_first(
        &self,
        from: &str,
        to: &str,
        priority: Priority,
        text: &str,
        how: Delivery,
        after_replay: Option<ReplayGuard>,
    ) -> Result<Message> {
        self.push_at(from, to, priority, text, how, Place::First, after_replay)
    }

    #[allow(clippy::too_many_arguments)] // the private core of the three push methods
    fn push_at(
        &self,
        from: &str,
        to: &str,
        priority: Priority,
        text: &str,
        how: Delivery,
        place: Place,
        after_replay: Option<ReplayGuard>,
    ) -> Result<Message> {
        let Delivery {
            enter,
            when_ready,
            ready_within,
        } = how;
        let dir = self.agent_dir(to)?;
        create_private_dir(&self.dir)?;
        create_private_dir(&dir)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the clock is before 1970")?;
        let queued = self.pending(to)?;
        let now_seq = now.as_nanos() as u64;
        let mut seq = match place {
            Place::Last => now_seq.max(queued.iter().map(|m| m.seq).max().unwrap_or(0) + 1),
            Place::First => queued
                .iter()
                .map(|m| m.seq.saturating_sub(1))
                .min()
                .unwrap_or(now_seq)
                .min(now_seq),
        };
        loop {
            let msg = Message {
                id: format!("{seq}-{}", std::process::id()),
                from: from.to_owned(),
                to: to.to_owned(),
                priority,
                text: text.to_owned(),
                queued_at_ms: now.as_millis() as u64,
                seq,
                enter,
                when_ready,
                ready_within_ms: ready_within.map(|d| d.as_millis() as u64),
                after_replay: after_replay.clone(),
            };
            if write_new(&dir.join(msg.file_name()), &serde_json::to_vec(&msg)?)? {
                return Ok(msg);
            }
            // Another sender took this name.
            seq = match place {
                Place::Last => seq + 1,
                Place::First => seq.saturating_sub(1),
            };
        }
    }

    /// The messages waiting for `agent`, in delivery order. Unreadable files are skipped
    /// (they are logged), so one bad file never blocks the queue; whoever delivers
    /// ([`super::drain::drain_agent`]) sets them aside with [`Queue::quarantine`] and
    /// reports them.
    pub fn pending(&self, agent: &str) -> Result<Vec<Message>> {
        let (messages, unreadable) = self.scan(agent)?;
        for u in unreadable {
            tracing::warn!("skipping queued message {}: {}", u.path.display(), u.error);
        }
        Ok(messages)
    }

    /// The messages waiting for `agent` and the queue files that are not messages.
    pub fn scan(&self, agent: &str) -> Result<(Vec<Message>, Vec<Unreadable>)> {
        let dir = self.agent_dir(agent)?;
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Vec::new(), Vec::new()));
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
            .collect();
        names.sort();
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        for name in names {
            let path = dir.join(&name);
            match read_message(&path) {
                Ok(m) if m.file_name() == name && m.to == agent => out.push(m),
                Ok(_) => unreadable.push(Unreadable {
                    name,
                    path,
                    error: "the message inside does not match its file name or queue".into(),
                }),
                Err(e) if is_not_found(&e) => {} // delivered meanwhile
                Err(e) => unreadable.push(Unreadable {
                    name,
                    path,
                    error: format!("{e:#}"),
                }),
            }
        }
        Ok((out, unreadable))
    }

    /// Moves a queue file that is not a message out of the queue, into
    /// `queue/<agent>/corrupt/` (where a person can read it), and returns where it went.
    pub fn quarantine(&self, agent: &str, bad: &Unreadable) -> Result<PathBuf> {
        let dir = self.agent_dir(agent)?;
        let corrupt = dir.join(CORRUPT_DIR);
        create_private_dir(&corrupt)?;
        let to = corrupt.join(&bad.name);
        fs::rename(&bad.path, &to)
            .with_context(|| format!("moving {} to {}", bad.path.display(), to.display()))?;
        Ok(to)
    }

    /// Puts `msg` (a copy recovered from a snapshot) back in the queue under its own file
    /// name, unless a message is there already. True if it was queued.
    pub fn restore_message(&self, msg: &Message) -> Result<bool> {
        let dir = self.agent_dir(&msg.to)?;
        create_private_dir(&self.dir)?;
        create_private_dir(&dir)?;
        write_new(&dir.join(msg.file_name()), &serde_json::to_vec(msg)?)
    }

    /// How many files of `agent`'s queue were set aside as unreadable.
    pub fn corrupt_count(&self, agent: &str) -> usize {
        self.agent_dir(agent)
            .ok()
            .and_then(|d| fs::read_dir(d.join(CORRUPT_DIR)).ok())
            .map_or(0, |e| e.count())
    }

    /// Agents that have a queue folder (maybe empty), except folders that are no agent's
    /// (a name orch would not give an agent).
    pub fn agents(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = match fs::read_dir(&self.dir) {
            Ok(e) => e
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.dir.display())),
        };
        out.sort();
        Ok(out)
    }

    /// Removes a delivered (or given-up) message. Removing one already gone is fine.
    /// Remembers `msg` as the last message delivered to its agent (`.last.json`, which
    /// `pending` never lists), for snapshots and the handover after a restore.
    pub fn set_last(&self, msg: &Message) -> Result<()> {
        let dir = self.agent_dir(&msg.to)?;
        crate::state::atomic_write(&dir.join(".last.json"), &serde_json::to_vec(msg)?)
    }

    /// The last message delivered to `agent`, if any.
    pub fn last(&self, agent: &str) -> Option<Message> {
        let bytes = fs::read(self.agent_dir(agent).ok()?.join(".last.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn remove(&self, msg: &Message) -> Result<()> {
        let path = self.agent_dir(&msg.to)?.join(msg.file_name());
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }

    /// Moves a message that cannot be retried (it may already sit in the agent's input)
    /// out of the queue into `queue/<agent>/failed/`, where a person can read it.
    pub fn give_up(&self, msg: &Message) -> Result<PathBuf> {
        let dir = self.agent_dir(&msg.to)?;
        let failed = dir.join("failed");
        create_private_dir(&failed)?;
        let to = failed.join(msg.file_name());
        fs::rename(dir.join(msg.file_name()), &to)
            .with_context(|| format!("moving a failed message to {}", to.display()))?;
        Ok(to)
    }

    /// Whether the message is still queued (its file is there, readable or not).
    pub fn contains(&self, msg: &Message) -> bool {
        self.agent_dir(&msg.to)
            .map(|d| d.join(msg.file_name()).exists())
            .unwrap_or(false)
    }

    /// Takes the agent's delivery lock if nobody holds it: `None` while another
    /// deliverer is at work (it delivers what is queued).
    pub fn try_lock(&self, agent: &str) -> Result<Option<AgentLock>> {
        let dir = self.agent_dir(agent)?;
        create_private_dir(&self.dir)?;
        create_private_dir(&dir)?;
        let file = crate::state::open_lock_file(&dir.join(".lock"))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(AgentLock { _file: file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(std::io::Error::from(e))
                .with_context(|| format!("locking the queue of {agent}")),
        }
    }

    /// Takes the agent's delivery lock, waiting for another deliverer to finish.
    pub fn lock(&self, agent: &str) -> Result<AgentLock> {
        let dir = self.agent_dir(agent)?;
        create_private_dir(&self.dir)?;
        create_private_dir(&dir)?;
        let file = crate::state::lock_exclusive(&dir.join(".lock"))?;
        Ok(AgentLock { _file: file })
    }
}

/// Writes a new file atomically, never replacing one: false if `path` already exists.
fn write_new(path: &Path, bytes: &[u8]) -> Result<bool> {
    let dir = path.parent().context("a queue file has a folder")?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    if let Err(e) = crate::state::write_synced_temp(&tmp, bytes) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => crate::state::sync_dir(dir).map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts waiting for `agent`, in delivery order.
    fn texts(q: &Queue, agent: &str) -> Vec<String> {
        q.pending(agent)
            .expect("pending")
            .into_iter()
            .map(|m| m.text)
            .collect()
    }

    #[test]
    fn delivery_order_is_priority_then_fifo_and_survives_reopening() {
        let d = tempfile::tempdir().expect("tmp");
        let q = Queue::new(d.path());
        let pushes = [
            (Priority::Low, "low 1"),
            (Priority::Normal, "normal 1"),
            (Priority::High, "high 1"),
            (Priority::Low, "low 2"),
            (Priority::High, "high 2"),
            (Priority::Normal, "normal 2"),
        ];
        for (p, t) in pushes {
            q.push("user", "worker1", p, t).expect("push");
        }
        q.push("user", "worker2", Priority::High, "other")
            .expect("push");
        let reopened = Queue::new(d.path());
        assert_eq!(
            texts(&reopened, "worker1"),
            ["high 1", "high 2", "normal 1", "normal 2", "low 1", "low 2"]
        );
        let first = reopened.pending("worker1").expect("pending").remove(0);
        assert!(reopened.contains(&first));
        reopened.remove(&first).expect("remove");
        reopened.remove(&first).expect("removing twice is fine");
        assert!(!reopened.contains(&first));
        assert_eq!(reopened.pending("worker1").expect("pending").len(), 5);
        assert_eq!(reopened.pending("nobody").expect("pending"), Vec::new());
        assert_eq!(reopened.agents().expect("agents"), ["worker1", "worker2"]);
        assert!(q.push("user", "../x", Priority::Low, "t").is_err());
        let second = reopened.pending("worker1").expect("pending").remove(0);
        let kept = reopened.give_up(&second).expect("give up");
        assert!(kept.exists() && !reopened.contains(&second));
        assert_eq!(reopened.pending("worker1").expect("pending").len(), 4);
        let _lock = q.lock("worker1").expect("lock");
    }

    #[test]
    fn push_first_goes_ahead_of_its_priority_and_requeue_never_doubles() {
        let d = tempfile::tempdir().expect("tmp");
        let q = Queue::new(d.path());
        let old = q.push("boss1", "w", Priority::High, "old").expect("push");
        q.push("boss1", "w", Priority::Normal, "normal")
            .expect("push");
        let how = Delivery {
            enter: true,
            when_ready: true,
            ready_within: None,
        };
        q.push_first("orch", "w", Priority::High, "handover", how, None)
            .expect("push first");
        assert_eq!(texts(&q, "w"), ["handover", "old", "normal"]);
        // Still queued: not queued again. Gone: queued again, behind, waiting for ready.
        assert_eq!(q.requeue(&old, None).expect("requeue"), None);
        q.remove(&old).expect("remove");
        let again = q
            .requeue(&old, None)
            .expect("requeue")
            .expect("queued again");
        assert!(again.when_ready && again.seq > old.seq);
        assert_eq!(texts(&q, "w"), ["handover", "old", "normal"]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Arbitrary bytes as queue files among good messages: no panic, every good
        /// message still pending in order, every other file found, set aside, and never
        /// counted as queued.
        #[test]
        fn arbitrary_queue_files_are_set_aside_and_nothing_good_is_lost(
            files in proptest::collection::vec(
                (proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0u8..3),
                0..6,
            )
        ) {
            let d = tempfile::tempdir().expect("tmp");
            let q = Queue::new(d.path());
            let good: Vec<Message> = (0..3)
                .map(|i| q.push("boss1", "w", Priority::Normal, &format!("m{i}")).expect("push"))
                .collect();
            for (i, (bytes, rank)) in files.iter().enumerate() {
                let name = format!("{rank}-x-{i:020}.json");
                fs::write(d.path().join("queue/w").join(name), bytes).expect("write");
            }
            let (msgs, bad) = q.scan("w").expect("scan");
            proptest::prop_assert_eq!(&msgs, &good);
            proptest::prop_assert_eq!(bad.len(), files.len());
            for b in &bad {
                q.quarantine("w", b).expect("quarantine");
            }
            proptest::prop_assert_eq!(q.pending("w").expect("pending"), good);
            proptest::prop_assert_eq!(q.corrupt_count("w"), files.len());
            proptest::prop_assert!(q.scan("w").expect("scan").1.is_empty());
        }
    }

    #[test]
    fn files_are_private_and_a_corrupt_one_is_skipped() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tmp");
        let q = Queue::new(d.path());
        let m = q.push("boss1", "w", Priority::Normal, "hi").expect("push");
        let path = d.path().join("queue/w").join(m.file_name());
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::write(d.path().join("queue/w/0-high-1.json"), "{not json").expect("write");
        let pending = q.pending("w").expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].from, "boss1");
    }
}
