//! The quality gate and rollback (SPEC §5.5): every new commit of the watched branches is
//! checked in a scratch worktree; a red one is run again before anything is blamed; the
//! culprit is found by bisection and attributed to an agent; repairs are proposed least
//! destructive first, each with a risk; one runs on its own when the layout allows its
//! risk and the limits are not reached, the others wait for a human; every repair can be
//! undone.
//!
//! Shape: [`bisect`] and [`plan`] are pure (positions and facts in, decisions out);
//! [`check`] runs the check command; [`state`] is what is persisted; this module and
//! `run`/`exec` are the runner, which gathers facts and carries out plans through the
//! one door to git, [`crate::git::repo`]. What the runner needs from its surroundings —
//! events, the pre-rollback snapshot, immediate delivery of a message, restarting an agent
//! — comes through [`Host`], which the supervisor and the command line each provide, so
//! both (and the dashboard's `y`/`n` later) call the same functions: [`Gate::scan`],
//! [`Gate::check_rev`], [`Gate::approve`], [`Gate::reject`], [`Gate::undo`],
//! [`Gate::list`], [`Gate::show`].
//!
//! Invariants: a branch moves only by compare-and-swap on the commit the plan was made
//! for (a commit landing meanwhile makes the plan be made again on the new tip); before
//! it moves there are a snapshot, a backup ref `refs/orch/backup/<id>` and, for every
//! checkout of the branch with uncommitted or untracked work, that work saved under
//! `refs/orch/saved/<id>`; a checkout is written only at the paths the repair changes.
//! Locks: `runner` (one check at a time) is always taken before `state`, never after.

pub mod bisect;
pub mod check;
mod exec;
pub mod plan;
mod run;
pub mod service;
pub mod session;
pub mod state;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

pub use bisect::Outcome;
pub use check::Running;
pub use plan::{Kind, Risk};
pub use state::{GateState, Proposal, Status, snapshot_section};

use crate::git::repo::{FileChange, Repo, Scratch};
use crate::layout::{Identity, Layout};
use crate::supervisor::event::Event;

/// Errors of the gate that are the user's input (exit status 2); everything else is a
/// failed operation (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum BadInput {
    #[error(
        "the layout has no quality: section, so there is no check to run; add one, e.g. quality: {{ check: \"cargo test\", branches: [main] }}"
    )]
    NoQuality,
    #[error(transparent)]
    NotARepository(#[from] crate::git::repo::NotARepository),
    #[error(transparent)]
    UnknownRevision(#[from] crate::git::repo::UnknownRevision),
    #[error(
        "branch {branch} does not exist in {}; create it or fix quality.branches", repo.display()
    )]
    NoSuchBranch { branch: String, repo: PathBuf },
    #[error("no rollback proposal {id}; `orch rollback list` shows them")]
    UnknownProposal { id: String },
    #[error("{id} could be any of {}; give more of the id", matches.join(", "))]
    AmbiguousProposal { id: String, matches: Vec<String> },
    #[error("proposal {id} is {status}, not pending; {hint}")]
    NotPending {
        id: String,
        status: &'static str,
        hint: String,
    },
    #[error("proposal {id} is {status}: only an executed rollback can be undone")]
    NotExecuted { id: String, status: &'static str },
}

/// What the runner needs from whoever hosts the gate (the supervisor, or a command).
pub trait Host {
    /// Records an event (journal, and the supervisor's stdout).
    fn emit(&mut self, event: Event);
    /// Takes the snapshot (reason `rollback`) that comes before a branch moves. `Ok(false)`
    /// when no session runs, so there is nothing to snapshot.
    fn snapshot(&mut self) -> Result<bool>;
    /// Delivers what is queued for `agent` now, if its pane can take it.
    fn deliver_now(&mut self, agent: &str);
    /// Restarts `agent` (an agent reset).
    fn restart(&mut self, agent: &str) -> Result<()>;
}

/// The gate's settings, from the layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub session: String,
    pub session_dir: PathBuf,
    pub repo: PathBuf,
    pub check: String,
    pub timeout: Duration,
    /// `quality.branches`.
    pub branches: Vec<String>,
    pub retries: u32,
    pub per_agent_identity: bool,
    /// Every agent's name.
    pub agents: Vec<String>,
    /// The agents with worktrees: their `orch/<agent>` branches are watched too.
    pub worktree_agents: Vec<String>,
    pub limits: plan::Limits,
}

impl Config {
    pub fn from_layout(layout: &Layout, session_dir: &Path) -> Result<Config, BadInput> {
        let q = layout.quality.as_ref().ok_or(BadInput::NoQuality)?;
        Ok(Config {
            session: layout.session.to_string(),
            session_dir: session_dir.to_path_buf(),
            repo: q.repo.clone(),
            check: q.check.clone(),
            timeout: q.timeout.0,
            branches: q.branches.clone(),
            retries: q.retries,
            per_agent_identity: q.identity == Identity::PerAgent,
            agents: layout.agents.iter().map(|a| a.name.to_string()).collect(),
            worktree_agents: layout
                .agents
                .iter()
                .filter(|a| a.worktree.is_some())
                .map(|a| a.name.to_string())
                .collect(),
            limits: plan::Limits {
                auto_max_risk: layout.rollback.auto_max_risk,
                max_consecutive: layout.rollback.max_consecutive,
                max_auto_per_day: layout.rollback.max_auto_per_day,
            },
        })
    }

    /// The gate's scratch worktree.
    pub fn scratch_dir(&self) -> PathBuf {
        self.session_dir.join("gate").join("worktree")
    }
}

/// The gate of one session.
pub struct Gate {
    cfg: Config,
    state: Mutex<GateState>,
    /// Held while a check runs (there is one scratch worktree).
    runner: Mutex<Option<Scratch>>,
    running: Running,
    /// Set as the host stops: no new check starts.
    stopping: std::sync::atomic::AtomicBool,
}

/// One check, as `orch check` reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckReport {
    pub commit: String,
    pub subject: String,
    pub branch: Option<String>,
    pub outcome: Outcome,
    /// `passed`, `exit status 1`, `timed out after 10m`, …
    pub reason: String,
    pub exit_status: Option<i32>,
    pub timed_out: bool,
    pub flaky: bool,
    /// Taken from an earlier check of the same tree: nothing ran.
    pub cached: bool,
    pub duration_ms: u64,
    pub output_tail: Vec<String>,
}

/// What one evaluation of a branch did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BranchReport {
    pub branch: String,
    pub tip: Option<String>,
    /// The check of the tip as it was found; `None` when it was evaluated before.
    pub check: Option<CheckReport>,
    /// Where the branch stands after this evaluation (after any repair).
    pub outcome: Option<Outcome>,
    /// Check runs this took (bisection included).
    pub runs: usize,
    pub culprits: Vec<String>,
    pub proposed: Vec<String>,
    pub executed: Vec<String>,
    /// Anything the user should know (why nothing was proposed, why it waits).
    pub notes: Vec<String>,
}

/// A rollback that was carried out.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Executed {
    pub id: String,
    pub kind: Kind,
    pub branch: String,
    pub from: String,
    pub to: String,
    pub replanned: u32,
    pub backup_ref: String,
    /// How to get back uncommitted work that clashed with the repair, one line each.
    pub notes: Vec<String>,
}

/// A rollback that was undone.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Undone {
    pub id: String,
    pub branch: String,
    pub from: String,
    pub to: String,
    /// Paths changed since the rollback, left as they are (with how to get them back).
    pub notes: Vec<String>,
}

/// A culprit commit, for `orch rollback show`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommitView {
    pub id: String,
    pub subject: String,
    pub author: String,
    pub agent: Option<String>,
}

/// Everything `orch rollback show` prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProposalDetails {
    pub proposal: Proposal,
    pub commits: Vec<CommitView>,
    /// What the repair changes (tip → new tip; for an executed one, what it changed).
    pub changes: Vec<FileChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

impl Gate {
    /// The gate of the session whose state lives in `cfg.session_dir`.
    pub fn open(cfg: Config) -> Result<Gate> {
        // A repository that is not one is the user's to fix.
        Repo::open(&cfg.repo).map_err(|e| {
            match e.downcast::<crate::git::repo::NotARepository>() {
                Ok(n) => anyhow::Error::new(BadInput::from(n)),
                Err(e) => e,
            }
        })?;
        let state = GateState::load(&cfg.session_dir)?;
        Ok(Gate {
            cfg,
            state: Mutex::new(state),
            runner: Mutex::new(None),
            running: Running::default(),
            stopping: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Waits (at most `patience`) until nothing holds the gate's state: a rollback that
    /// is moving a branch has finished. False if one still runs.
    pub fn wait_idle(&self, patience: Duration) -> bool {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match self.state.try_lock() {
                Ok(_) => return true,
                Err(std::sync::TryLockError::Poisoned(_)) => return true,
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether [`Gate::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Kills the check that runs now, if any, and starts no other (the supervisor does
    /// this as it stops).
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.running.kill();
    }

    fn repo(&self) -> Result<Repo> {
        Repo::open(&self.cfg.repo)
    }

    fn lock_state(&self) -> Result<MutexGuard<'_, GateState>> {
        self.state.lock().map_err(|_| {
            anyhow::anyhow!("the gate state lock is poisoned (a gate thread panicked)")
        })
    }

    /// Saves the state as it is now.
    fn save(&self, state: &mut GateState) -> Result<()> {
        state.save(&self.cfg.session_dir)
    }

    /// The state as it is now (a copy).
    pub fn state(&self) -> Result<GateState> {
        Ok(self.lock_state()?.clone())
    }

    /// Every proposal, oldest first.
    pub fn list(&self) -> Result<Vec<Proposal>> {
        Ok(self.lock_state()?.proposals.clone())
    }

    /// Every proposal, if nobody holds the state now (`None` otherwise): for a caller
    /// that must never wait on the gate, such as the supervisor's loop, which the gate
    /// itself may be waiting for while it holds the state.
    pub fn try_list(&self) -> Option<Vec<Proposal>> {
        self.state.try_lock().ok().map(|s| s.proposals.clone())
    }

    /// The full id of the proposal `id` names (a unique prefix is enough).
    pub fn resolve_id(&self, id: &str) -> Result<String> {
        let state = self.lock_state()?;
        resolve_id(&state, id)
    }

    /// What a proposal is, with its commits and what it changes (and the diff).
    pub fn show(&self, id: &str, with_diff: bool) -> Result<ProposalDetails> {
        let p = {
            let state = self.lock_state()?;
            let id = resolve_id(&state, id)?;
            state
                .proposal(&id)
                .cloned()
                .ok_or(BadInput::UnknownProposal { id })?
        };
        let repo = self.repo()?;
        let mut commits = Vec::new();
        for (c, agent) in p.commits.iter().zip(self.agents_of(&repo, &p.commits)?) {
            let info = repo.commit_info(c)?;
            commits.push(CommitView {
                id: info.id,
                subject: info.subject,
                author: info.author,
                agent,
            });
        }
        let (from, to) = match &p.execution {
            Some(e) => (e.from.clone(), e.to.clone()),
            None => (p.tip.clone(), p.new_tip.clone()),
        };
        let changes = repo.diff_commits(&from, &to)?;
        let diff = if with_diff {
            Some(repo.patch(&from, &to)?)
        } else {
            None
        };
        Ok(ProposalDetails {
            proposal: p,
            commits,
            changes,
            diff,
        })
    }
}

fn resolve_id(state: &GateState, id: &str) -> Result<String> {
    if state.proposal(id).is_some() {
        return Ok(id.to_owned());
    }
    let matches: Vec<String> = state
        .proposals
        .iter()
        .filter(|p| !id.is_empty() && p.id.starts_with(id))
        .map(|p| p.id.clone())
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(BadInput::UnknownProposal { id: id.to_owned() }.into()),
        _ => Err(BadInput::AmbiguousProposal {
            id: id.to_owned(),
            matches,
        }
        .into()),
    }
}

/// Unix seconds now.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 3339 now, with milliseconds.
fn rfc3339_now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
