//! What the gate remembers, in `<state-dir>/<session>/gate.json` (written atomically,
//! mode 0600, through `crate::state`): check results by tree and by commit, each watched
//! branch's last tip and last green commit, the proposals and what became of them, and
//! the counters the limits need. A new supervisor takes it over as it is; snapshots carry
//! a copy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::bisect::Outcome;
use super::plan::{Kind, Risk};
use crate::git::repo::SavedWork;

pub const STATE_FILE: &str = "gate.json";
pub const FORMAT: u32 = 1;
/// Results kept; the oldest go first (a tree checked once a year is checked again).
const MAX_RESULTS: usize = 5000;
/// Closed proposals (rejected or undone) kept; the oldest go first (so a repair rejected
/// 500 closed proposals ago could be proposed again). Pending and executed ones are always
/// kept (an executed one can still be undone).
const MAX_CLOSED_PROPOSALS: usize = 500;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GateState {
    #[serde(default)]
    pub format: u32,
    /// Check results by tree: a commit with a tree already checked takes its result.
    #[serde(default)]
    pub trees: BTreeMap<String, CheckResult>,
    /// The tree of every commit checked, so results are kept per commit too.
    #[serde(default)]
    pub commits: BTreeMap<String, String>,
    #[serde(default)]
    pub branches: BTreeMap<String, BranchState>,
    #[serde(default)]
    pub proposals: Vec<Proposal>,
    /// Unix seconds of every automatic rollback in the last 24 hours.
    #[serde(default)]
    pub auto_rollbacks: Vec<u64>,
}

/// One check result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub outcome: Outcome,
    /// The commit it ran at.
    pub commit: String,
    pub exit_status: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default)]
    pub timed_out: bool,
    /// Red first, green when run again.
    #[serde(default)]
    pub flaky: bool,
    pub duration_ms: u64,
    pub output_tail: Vec<String>,
    /// Unix seconds.
    pub at: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BranchState {
    /// The last tip the gate evaluated.
    pub tip: Option<String>,
    pub outcome: Option<Outcome>,
    pub last_green: Option<String>,
    /// Rollbacks since the last green commit that orch did not make itself.
    #[serde(default)]
    pub consecutive: u32,
    /// Why automatic rollbacks stopped on this branch; cleared when a human acts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Executed,
    Rejected,
    Undone,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Executed => "executed",
            Status::Rejected => "rejected",
            Status::Undone => "undone",
        }
    }
}

/// A rollback proposal. Its first fields are SPEC §4's `rollback list --json` shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: String,
    pub risk: Risk,
    pub kind: Kind,
    /// The culprit commits, oldest first.
    pub commits: Vec<String>,
    /// The files they touched.
    pub files: Vec<String>,
    pub agents: Vec<String>,
    pub status: Status,
    /// `refs/orch/backup/<id>`: the branch as it was, once the proposal runs.
    pub backup_ref: String,
    pub branch: String,
    /// The red tip the plan is for, and the commit the branch moves to.
    pub tip: String,
    pub new_tip: String,
    /// The newest green ancestor.
    pub green: String,
    pub why: String,
    /// RFC 3339.
    pub created: String,
    /// Why it waits for a human (while pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Why it was closed without a human (superseded, or the branch turned green).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<String>,
    /// The failing check's output, last lines.
    pub output_tail: Vec<String>,
    /// `check` as it failed: reason and exit status.
    pub failure: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<Execution>,
}

/// How a proposal was carried out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// The branch before and after.
    pub from: String,
    pub to: String,
    pub auto: bool,
    pub at: String,
    /// Plans made again because the branch moved under the first one.
    pub replanned: u32,
    pub checkouts: Vec<CheckoutChange>,
    /// The check at `to` ("green", "red", …), once it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undone_at: Option<String>,
}

/// What a rollback did to one checkout of its branch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckoutChange {
    pub path: PathBuf,
    /// Its uncommitted work, saved before anything changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved: Option<SavedWork>,
    /// The paths the rollback wrote there.
    pub touched: Vec<String>,
    /// Of those, the ones that had uncommitted changes (now only in `saved`).
    pub clashes: Vec<String>,
}

impl GateState {
    pub fn load(session_dir: &Path) -> Result<GateState> {
        let path = session_dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is not valid gate state; move it away to start the gate afresh",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(GateState {
                format: FORMAT,
                ..GateState::default()
            }),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn save(&mut self, session_dir: &Path) -> Result<()> {
        self.format = FORMAT;
        if self.trees.len() > MAX_RESULTS {
            let mut by_age: Vec<(u64, String)> =
                self.trees.iter().map(|(t, r)| (r.at, t.clone())).collect();
            by_age.sort();
            for (_, t) in by_age.iter().take(self.trees.len() - MAX_RESULTS) {
                self.trees.remove(t);
            }
            let trees = &self.trees;
            self.commits.retain(|_, t| trees.contains_key(t));
        }
        let closed = |p: &Proposal| matches!(p.status, Status::Rejected | Status::Undone);
        let mut excess = self
            .proposals
            .iter()
            .filter(|p| closed(p))
            .count()
            .saturating_sub(MAX_CLOSED_PROPOSALS);
        self.proposals.retain(|p| {
            if excess > 0 && closed(p) {
                excess -= 1;
                false
            } else {
                true
            }
        });
        let bytes = serde_json::to_vec_pretty(self)?;
        crate::state::atomic_write(&session_dir.join(STATE_FILE), &bytes)
    }

    /// The result for a tree, if it was checked.
    pub fn result(&self, tree: &str) -> Option<&CheckResult> {
        self.trees.get(tree)
    }

    pub fn record(&mut self, tree: &str, result: CheckResult) {
        self.commits.insert(result.commit.clone(), tree.to_owned());
        self.trees.insert(tree.to_owned(), result);
    }

    pub fn proposal(&self, id: &str) -> Option<&Proposal> {
        self.proposals.iter().find(|p| p.id == id)
    }

    pub fn proposal_mut(&mut self, id: &str) -> Option<&mut Proposal> {
        self.proposals.iter_mut().find(|p| p.id == id)
    }

    pub fn branch(&mut self, name: &str) -> &mut BranchState {
        self.branches.entry(name.to_owned()).or_default()
    }

    /// Automatic rollbacks in the 24 hours before `now` (older ones are forgotten).
    pub fn auto_last_day(&mut self, now: u64) -> u32 {
        self.auto_rollbacks
            .retain(|t| now.saturating_sub(*t) < 24 * 3600);
        self.auto_rollbacks.len() as u32
    }

    /// Whether orch made `commit` itself, as the new tip of a rollback.
    pub fn made_by_orch(&self, commit: &str) -> bool {
        self.proposals
            .iter()
            .any(|p| p.execution.as_ref().is_some_and(|e| e.to == commit))
    }
}

/// The gate state file's contents, for a snapshot (`None` when the gate never ran).
/// The decisions waiting for a human: pending proposals, with the alternatives for one
/// red tip (revert, restore, reset…) counted once.
pub fn pending_decisions(proposals: &[Proposal]) -> usize {
    let mut tips: Vec<(&str, &str)> = proposals
        .iter()
        .filter(|p| p.status == Status::Pending)
        .map(|p| (p.branch.as_str(), p.tip.as_str()))
        .collect();
    tips.sort_unstable();
    tips.dedup();
    tips.len()
}

pub fn snapshot_section(session_dir: &Path) -> Option<serde_json::Value> {
    let bytes = std::fs::read(session_dir.join(STATE_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}
