//! The runner's second half: carrying out a proposal (on its own or approved), rejecting
//! one, and undoing a rollback. Everything that could be lost is kept before the branch
//! moves: a snapshot, `refs/orch/backup/<id>`, and each checkout's uncommitted work under
//! `refs/orch/saved/<id>`. The branch moves by compare-and-swap; when an agent committed
//! meanwhile, the plan is made again on the new tip and the commit is kept.

use anyhow::{Context, Result, anyhow, bail};

use super::plan::Kind;
use super::state::{CheckoutChange, Execution, GateState, Proposal, Status};
use super::{BadInput, Executed, Gate, Host, Undone, rfc3339_now, unix_now};
use crate::git::repo::{RefMoved, Repo, short, union};
use crate::messaging::queue::{Delivery, Priority, Queue};
use crate::supervisor::event::{Event, EventKind};

/// Plans made again in one execution before orch gives up on a branch that keeps moving.
const MAX_REPLANS: u32 = 5;

/// Where a branch went, and the checkouts of it with their saved work.
struct Moved {
    plan_tip: String,
    new_tip: String,
    replanned: u32,
    checkouts: Vec<(std::path::PathBuf, Option<crate::git::repo::SavedWork>)>,
}

impl Gate {
    /// `orch rollback approve ID` (and the dashboard's `y`): carries out a pending
    /// proposal now. A human acting clears an escalation on its branch. The check runs
    /// again afterwards through [`Gate::evaluate_branch`] (the caller's to call, so a
    /// supervisor can answer at once and check in the background).
    pub fn approve(&self, id: &str, host: &mut dyn Host) -> Result<Executed> {
        let id = self.resolve_id(id)?;
        self.execute(&id, false, host)
    }

    /// `orch rollback reject ID` (and the dashboard's `n`): the proposal is never run and
    /// never proposed again for the same commits.
    pub fn reject(&self, id: &str, host: &mut dyn Host) -> Result<Proposal> {
        let mut state = self.lock_state()?;
        let id = super::resolve_id(&state, id)?;
        let p = state
            .proposal_mut(&id)
            .ok_or_else(|| BadInput::UnknownProposal { id: id.clone() })?;
        if p.status != Status::Pending {
            return Err(not_pending(p).into());
        }
        p.status = Status::Rejected;
        p.waiting = None;
        p.closed = Some("rejected by a human".into());
        let p = p.clone();
        let b = state.branch(&p.branch);
        b.escalated = None;
        b.consecutive = 0;
        self.save(&mut state)?;
        drop(state);
        host.emit(
            Event::new(EventKind::RollbackRejected, None)
                .with("id", p.id.as_str())
                .with("repair", p.kind.as_str())
                .with("branch", p.branch.as_str())
                .with("commits", p.commits.clone())
                .with("reason", "rejected by a human"),
        );
        Ok(p)
    }

    /// Carries out proposal `id` (which must be pending).
    pub(super) fn execute(&self, id: &str, auto: bool, host: &mut dyn Host) -> Result<Executed> {
        let repo = self.repo()?;
        let mut state = self.lock_state()?;
        let p = state
            .proposal(id)
            .cloned()
            .ok_or_else(|| BadInput::UnknownProposal { id: id.to_owned() })?;
        if p.status != Status::Pending {
            return Err(not_pending(&p).into());
        }
        let mut prepared = false;
        let Moved {
            plan_tip,
            new_tip,
            replanned,
            checkouts,
        } = match self.move_branch(&repo, &mut state, &p, host, &mut prepared) {
            Ok(m) => m,
            Err(e) => {
                if prepared {
                    // The agents were told to stop: tell them it is off.
                    self.tell(
                        host,
                        &p.agents,
                        &format!(
                            "orch: rollback {id} did not run ({e:#}); nothing was changed, carry on."
                        ),
                        true,
                    );
                }
                return Err(e);
            }
        };

        // The branch moved; now each of its checkouts, at the changed paths only.
        let changed: Vec<String> = repo
            .diff_commits(&plan_tip, &new_tip)?
            .into_iter()
            .map(|f| f.path)
            .collect();
        let mut changes = Vec::new();
        let mut notes = Vec::new();
        for (wt, saved) in checkouts {
            let dirty: Vec<String> = saved.as_ref().map(|s| s.paths.clone()).unwrap_or_default();
            let touched = if p.kind == Kind::AgentReset {
                // The agent's tree is reset: its tracked changes go (they are saved).
                let untracked: Vec<String> = saved
                    .as_ref()
                    .map(|s| s.untracked_paths.clone())
                    .unwrap_or_default();
                let tracked: Vec<String> = dirty
                    .iter()
                    .filter(|d| !untracked.contains(d))
                    .cloned()
                    .collect();
                union(&changed, &tracked)
            } else {
                changed.clone()
            };
            let clashes: Vec<String> = touched
                .iter()
                .filter(|t| dirty.contains(t))
                .cloned()
                .collect();
            repo.write_paths(&wt, &new_tip, &touched)
                .with_context(|| format!("updating {} after rollback {id}", wt.display()))?;
            if let Some(s) = &saved {
                for c in &clashes {
                    notes.push(get_back(&wt, s, c));
                }
            }
            changes.push(CheckoutChange {
                path: wt,
                saved,
                touched,
                clashes,
            });
        }

        let execution = Execution {
            from: plan_tip.clone(),
            to: new_tip.clone(),
            auto,
            at: rfc3339_now(),
            replanned,
            checkouts: changes,
            recheck: None,
            undone_at: None,
        };
        let done = {
            let q = state
                .proposal_mut(id)
                .ok_or_else(|| anyhow!("proposal {id} vanished"))?;
            q.status = Status::Executed;
            q.waiting = None;
            q.execution = Some(execution);
            q.clone()
        };
        // The other repairs of the same failure are moot now.
        let mut superseded = Vec::new();
        for q in state.proposals.iter_mut() {
            if q.id != id
                && q.status == Status::Pending
                && q.branch == p.branch
                && q.commits == p.commits
            {
                q.status = Status::Rejected;
                q.waiting = None;
                q.closed = Some(format!("superseded by rollback {id}"));
                superseded.push(q.id.clone());
            }
        }
        let now = unix_now();
        let b = state.branch(&p.branch);
        if auto {
            b.consecutive += 1;
        } else {
            // A human acted: the limits start over.
            b.consecutive = 0;
            b.escalated = None;
        }
        if auto {
            state.auto_rollbacks.push(now);
        }
        self.save(&mut state)?;
        drop(state);

        for s in &superseded {
            host.emit(
                Event::new(EventKind::RollbackRejected, None)
                    .with("id", s.as_str())
                    .with("branch", p.branch.as_str())
                    .with("reason", format!("superseded by rollback {id}")),
            );
        }
        let what = describe_repair(&done);
        let mut after = format!(
            "orch: rollback {id} done: {what} on {}, because the check `{}` failed ({}). {} is now at {}; the old state is kept in {}.",
            p.branch,
            self.cfg.check,
            p.failure,
            p.branch,
            short(&new_tip),
            p.backup_ref
        );
        if let Some(last) = p.output_tail.last() {
            after.push_str(&format!(" Last line of the check: {last}"));
        }
        after.push_str(" Fix it and commit again; the check runs on every commit.");
        if p.kind == Kind::AgentReset {
            // The restarted agent reads it once it is ready.
            if let Some(agent) = p.agents.first() {
                self.queue(agent, &after, Priority::High, true);
                host.restart(agent)
                    .with_context(|| format!("restarting {agent} after rollback {id}"))?;
            }
        } else {
            self.tell(host, &p.agents, &after, true);
        }
        let others: Vec<String> = self
            .cfg
            .agents
            .iter()
            .filter(|a| !p.agents.contains(a))
            .cloned()
            .collect();
        let notice = format!(
            "orch: notice: rollback {id} on {} ({what}); {} is now at {}.",
            p.branch,
            p.branch,
            short(&new_tip)
        );
        for a in &others {
            self.queue(a, &notice, Priority::Normal, true);
        }
        Ok(Executed {
            id: id.to_owned(),
            kind: p.kind,
            branch: p.branch.clone(),
            from: plan_tip,
            to: new_tip,
            replanned,
            backup_ref: p.backup_ref.clone(),
            notes,
        })
    }

    /// Everything up to and including the compare-and-swap move of the branch: planning
    /// again while it moves, the snapshot and the pause message (once; `prepared` says
    /// whether they happened), the backup ref and the saved work.
    fn move_branch(
        &self,
        repo: &Repo,
        state: &mut GateState,
        p: &Proposal,
        host: &mut dyn Host,
        prepared: &mut bool,
    ) -> Result<Moved> {
        let full_ref = format!("refs/heads/{}", p.branch);
        let mut plan_tip = p.tip.clone();
        let mut new_tip = p.new_tip.clone();
        let mut replanned = 0;
        let mut checkouts;
        let id = p.id.as_str();
        loop {
            let now = repo
                .branch_tip(&p.branch)?
                .ok_or_else(|| anyhow!("branch {} is gone; reject proposal {id}", p.branch))?;
            if now != plan_tip {
                replanned += 1;
                if replanned > MAX_REPLANS {
                    bail!(
                        "{} kept moving while rollback {id} was planned {MAX_REPLANS} times; nothing was changed, approve it again when it is quiet",
                        p.branch
                    );
                }
                new_tip = self.replan(repo, p, &plan_tip, &now)?;
                plan_tip = now;
                if let Some(q) = state.proposal_mut(id) {
                    q.tip = plan_tip.clone();
                    q.new_tip = new_tip.clone();
                }
            }
            if !*prepared {
                *prepared = true;
                // The snapshot carries the gate state as it is before anything moves.
                if let Some(q) = state.proposal_mut(id) {
                    q.waiting = None;
                }
                self.save(state)?;
                host.snapshot().with_context(|| {
                    format!("taking the snapshot before rollback {id}; nothing was changed")
                })?;
                let culprits: Vec<String> = p.agents.clone();
                self.tell(
                    host,
                    &culprits,
                    &format!(
                        "orch: STOP and wait. Your commit(s) {} broke the check `{}` on {} ({}); orch is rolling back ({}). Do not commit until orch says it is done.",
                        shorts(&p.commits),
                        self.cfg.check,
                        p.branch,
                        p.failure,
                        p.kind.as_str()
                    ),
                    true,
                );
                // A commit may have landed while the agents were told: look again.
                continue;
            }
            if self.is_stopping() {
                bail!("orch is stopping; rollback {id} did not run and nothing was changed");
            }
            repo.keep_ref(
                &p.backup_ref,
                &plan_tip,
                &format!(
                    "orch: {} as it was before rollback {id} ({})",
                    p.branch,
                    p.kind.as_str()
                ),
            )?;
            checkouts = Vec::new();
            for (n, wt) in repo.checkouts_of(&p.branch)?.into_iter().enumerate() {
                let reference = if n == 0 {
                    format!("refs/orch/saved/{id}")
                } else {
                    format!("refs/orch/saved/{id}-{n}")
                };
                let saved = repo.save_uncommitted(
                    &wt,
                    &reference,
                    &format!(
                        "orch: uncommitted work in {} before rollback {id}",
                        wt.display()
                    ),
                )?;
                checkouts.push((wt, saved));
            }
            let log = format!("orch: rollback {id} ({}): {}", p.kind.as_str(), p.why);
            match repo.move_ref(&full_ref, &new_tip, &plan_tip, &log) {
                Ok(()) => break,
                // Someone committed between the look and the move: plan again.
                Err(e) if e.is::<RefMoved>() => continue,
                Err(e) => return Err(e),
            }
        }

        Ok(Moved {
            plan_tip,
            new_tip,
            replanned,
            checkouts,
        })
    }

    /// The same repair, made again for a branch that moved from `old` to `now`: the
    /// commits that landed are kept.
    fn replan(&self, repo: &Repo, p: &Proposal, old: &str, now: &str) -> Result<String> {
        if !repo.contains(now, old)? {
            bail!(
                "{} no longer holds {} (it is at {} now: reset or rewritten), so proposal {} is stale; reject it",
                p.branch,
                short(old),
                short(now),
                p.id
            );
        }
        match p.kind {
            Kind::Revert => {
                let newest_first: Vec<String> = p.commits.iter().rev().cloned().collect();
                repo.revert_onto(&newest_first, now, &format!("Orch-Rollback: {}", p.id))?
                    .ok_or_else(|| {
                        anyhow!(
                            "{} does not revert cleanly onto {} any more (a commit since touched the same lines); nothing was changed",
                            shorts(&p.commits),
                            short(now)
                        )
                    })
            }
            Kind::RestoreFiles => repo
                .restore_files_onto(
                    now,
                    &p.green,
                    &p.files,
                    &super::run::restore_message(&p.files, &p.green, &p.id),
                )?
                .ok_or_else(|| {
                    anyhow!(
                        "the files are already as they were in {}; nothing to restore",
                        short(&p.green)
                    )
                }),
            Kind::Reset | Kind::AgentReset => {
                // Keep what landed since the plan: the same commits again on the green one.
                let (mut landed, _) =
                    repo.first_parents(now, 10_000, |c| c.first_parent() == Some(old))?;
                landed.reverse();
                let ids: Vec<String> = landed.into_iter().map(|c| c.id).collect();
                repo.cherry_pick_onto(&ids, &p.green)?.ok_or_else(|| {
                    anyhow!(
                        "commits landed on {} since the plan and do not apply cleanly on {}; nothing was changed",
                        p.branch,
                        short(&p.green)
                    )
                })
            }
        }
    }

    /// `orch rollback undo ID`: the branch, and every checkout's saved work, back exactly
    /// as before the rollback. Refused when the branch moved since (that would drop the
    /// commits made after it).
    pub fn undo(&self, id: &str, host: &mut dyn Host) -> Result<Undone> {
        let repo = self.repo()?;
        let mut state = self.lock_state()?;
        let id = super::resolve_id(&state, id)?;
        let p = state
            .proposal(&id)
            .cloned()
            .ok_or_else(|| BadInput::UnknownProposal { id: id.clone() })?;
        let Some(exe) = p.execution.clone().filter(|_| p.status == Status::Executed) else {
            return Err(BadInput::NotExecuted {
                id,
                status: p.status.as_str(),
            }
            .into());
        };
        let moved = |now: &str| {
            anyhow!(
                "{} moved since rollback {id} (it is at {}, the rollback left it at {}); undo would drop those commits, so nothing was changed. To go back anyway: git branch -f {} {}",
                p.branch,
                short(now),
                short(&exe.to),
                p.branch,
                exe.from
            )
        };
        let now = repo.branch_tip(&p.branch)?.unwrap_or_default();
        if now != exe.to {
            return Err(moved(&now));
        }
        let full_ref = format!("refs/heads/{}", p.branch);
        match repo.move_ref(
            &full_ref,
            &exe.from,
            &exe.to,
            &format!("orch: undo of rollback {id}"),
        ) {
            Ok(()) => {}
            Err(e) => {
                if let Some(m) = e.downcast_ref::<RefMoved>() {
                    return Err(moved(&m.now));
                }
                return Err(e);
            }
        }
        let mut notes = Vec::new();
        for c in &exe.checkouts {
            let (files_from, index_from) = match &c.saved {
                Some(s) => {
                    let files = match &s.untracked {
                        Some(u) => repo.combine(&s.commit, u)?,
                        None => s.commit.clone(),
                    };
                    (files, s.index.clone())
                }
                None => (exe.from.clone(), exe.from.clone()),
            };
            let paths = union(&c.touched, &c.clashes);
            let untouched = repo.paths_as_in(&c.path, &exe.to, &paths)?;
            for left in paths.iter().filter(|p| !untouched.contains(p)) {
                let hint = match &c.saved {
                    Some(s) => format!(
                        "; its version from before the rollback: {}",
                        get_back(&c.path, s, left)
                    ),
                    None => String::new(),
                };
                notes.push(format!(
                    "{} changed since the rollback and was left as it is{hint}",
                    c.path.join(left).display()
                ));
            }
            repo.write_paths_from(&c.path, &files_from, &index_from, &untouched)
                .with_context(|| format!("putting {} back", c.path.display()))?;
        }
        if let Some(q) = state.proposal_mut(&id) {
            q.status = Status::Undone;
            if let Some(e) = q.execution.as_mut() {
                e.undone_at = Some(rfc3339_now());
            }
        }
        let b = state.branch(&p.branch);
        b.escalated = None;
        b.consecutive = 0;
        self.save(&mut state)?;
        drop(state);
        host.emit(
            Event::new(EventKind::RollbackUndone, None)
                .with("id", id.as_str())
                .with("repair", p.kind.as_str())
                .with("branch", p.branch.as_str())
                .with("from", exe.to.as_str())
                .with("to", exe.from.as_str())
                .with("left_alone", notes.clone()),
        );
        self.tell(
            host,
            &p.agents,
            &format!(
                "orch: rollback {id} on {} was undone by a human; {} is back at {}.",
                p.branch,
                p.branch,
                short(&exe.from)
            ),
            false,
        );
        Ok(Undone {
            id,
            branch: p.branch,
            from: exe.to,
            to: exe.from,
            notes,
        })
    }

    /// Queues `text` from orch for each of `agents`; `urgent` ones go out now.
    fn tell(&self, host: &mut dyn Host, agents: &[String], text: &str, urgent: bool) {
        for a in agents {
            self.queue(a, text, Priority::High, false);
            if urgent {
                host.deliver_now(a);
            }
        }
    }

    fn queue(&self, agent: &str, text: &str, priority: Priority, when_ready: bool) {
        if !self.cfg.agents.iter().any(|a| a == agent) {
            return;
        }
        let queue = Queue::new(&self.cfg.session_dir);
        let how = Delivery {
            enter: true,
            when_ready,
            ..Delivery::default()
        };
        if let Err(e) =
            queue.push_with("orch", agent, priority, &crate::tmux::paste_safe(text), how)
        {
            tracing::warn!(agent, "queueing the gate's message: {e:#}");
        }
    }
}

fn not_pending(p: &Proposal) -> BadInput {
    let hint = match p.status {
        Status::Executed => format!("`orch rollback undo {}` reverses it", p.id),
        Status::Rejected => p.closed.clone().unwrap_or_else(|| "it was rejected".into()),
        Status::Undone => "it was carried out and undone".into(),
        Status::Pending => String::new(),
    };
    BadInput::NotPending {
        id: p.id.clone(),
        status: p.status.as_str(),
        hint,
    }
}

fn shorts(ids: &[String]) -> String {
    ids.iter().map(|c| short(c)).collect::<Vec<_>>().join(", ")
}

fn describe_repair(p: &Proposal) -> String {
    let commits = shorts(&p.commits);
    match p.kind {
        Kind::Revert => format!("reverted {commits}"),
        Kind::RestoreFiles => format!("restored {} as in {}", p.files.join(", "), short(&p.green)),
        Kind::Reset => format!(
            "reset {} to {} (dropping {commits} and what came after)",
            p.branch,
            short(&p.green)
        ),
        Kind::AgentReset => format!(
            "reset the branch and worktree to {} (dropping {commits}); you were restarted",
            short(&p.green)
        ),
    }
}

/// The command that gets back the saved version of `path` in the checkout `wt`.
pub(super) fn get_back(
    wt: &std::path::Path,
    s: &crate::git::repo::SavedWork,
    path: &str,
) -> String {
    if s.untracked_paths.iter().any(|u| u == path) {
        format!(
            "git -C {} show '{}^3:{path}' > {}",
            wt.display(),
            s.reference,
            wt.join(path).display()
        )
    } else {
        format!("git -C {} checkout {} -- {path}", wt.display(), s.reference)
    }
}
