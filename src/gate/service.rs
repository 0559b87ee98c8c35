//! The gate's commands as data: what `orch check` and `orch rollback …` ask ([`Call`]) and
//! what they get back ([`Answer`]), so the same call runs in the supervisor (it arrives
//! over the control socket) or in the command itself, and the dashboard can make the same
//! calls later.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{BranchReport, CheckReport, Executed, Gate, Host, Proposal, ProposalDetails, Undone};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Call {
    /// One pass of the gate now over every watched branch (the check runs even for trees
    /// seen before), or with `rev`, the check at that revision only.
    Check {
        rev: Option<String>,
    },
    List,
    Show {
        id: String,
        diff: bool,
    },
    Approve {
        id: String,
    },
    Reject {
        id: String,
    },
    Undo {
        id: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    Scanned {
        branches: Vec<BranchReport>,
    },
    Checked {
        check: Box<CheckReport>,
    },
    List {
        proposals: Vec<Proposal>,
    },
    Show {
        details: Box<ProposalDetails>,
    },
    Approved {
        executed: Box<Executed>,
        /// The check after it, when it ran before the answer (without a supervisor).
        recheck: Option<Box<BranchReport>>,
    },
    Rejected {
        proposal: Box<Proposal>,
    },
    Undone {
        undone: Undone,
    },
}

/// Carries out `call`. With `recheck`, an approved rollback's branch is checked again
/// before the answer; a supervisor answers at once and checks in the background.
pub fn call(gate: &Gate, call: Call, host: &mut dyn Host, recheck: bool) -> Result<Answer> {
    Ok(match call {
        Call::Check { rev: None } => Answer::Scanned {
            branches: gate.scan(host, true)?,
        },
        Call::Check { rev: Some(rev) } => Answer::Checked {
            check: Box::new(gate.check_rev(&rev, host)?),
        },
        Call::List => Answer::List {
            proposals: gate.list()?,
        },
        Call::Show { id, diff } => Answer::Show {
            details: Box::new(gate.show(&id, diff)?),
        },
        Call::Approve { id } => {
            let executed = gate.approve(&id, host)?;
            let recheck = if recheck {
                Some(Box::new(gate.evaluate_branch(&executed.branch, host)?))
            } else {
                None
            };
            Answer::Approved {
                executed: Box::new(executed),
                recheck,
            }
        }
        Call::Reject { id } => Answer::Rejected {
            proposal: Box::new(gate.reject(&id, host)?),
        },
        Call::Undo { id } => Answer::Undone {
            undone: gate.undo(&id, host)?,
        },
    })
}

impl Call {
    /// How long a command waits for a supervisor to answer (`None`: as long as it takes;
    /// a check runs for up to its timeout, several times when bisecting).
    pub fn patience(&self) -> Option<std::time::Duration> {
        match self {
            Call::Check { .. } => None,
            Call::Approve { .. } | Call::Undo { .. } => Some(std::time::Duration::from_secs(300)),
            _ => Some(std::time::Duration::from_secs(60)),
        }
    }
}
