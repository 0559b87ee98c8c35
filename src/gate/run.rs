//! The runner's first half: checking tips (or taking a known result), telling a flake
//! from a failure, finding the culprits by bisection, and turning the facts into recorded
//! proposals; the policy then says whether the first one runs (see `exec`).

use std::collections::BTreeSet;

use anyhow::{Context, Result};

use super::bisect::{Bisect, Outcome};
use super::check;
use super::plan::{self, Authorship, Decision, Kind, RedRange, Standing, Suspect};
use super::state::{CheckResult, Proposal, Status};
use super::{BadInput, BranchReport, CheckReport, Gate, Host, unix_now};
use crate::git::repo::{CommitInfo, Repo, Scratch, short};
use crate::supervisor::event::{Event, EventKind};

/// First-parent commits searched for a green ancestor before giving up.
const MAX_RANGE: usize = 1000;
/// Without a known green ancestor, runs spent looking further back (1, 2, 4, … commits).
const MAX_BOUNDARY_PROBES: usize = 6;
/// Candidates whose files are matched against the failure output.
const MAX_HINT_CANDIDATES: usize = 200;
/// Rounds of evaluate → repair → evaluate again on one branch in one pass.
const MAX_ROUNDS: usize = 6;

/// Why a check runs, as `check_started` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Purpose {
    /// A branch's new tip.
    Tip,
    /// `orch check --rev`.
    Manual,
    Bisect,
    /// Looking for a green ancestor when none is known.
    Boundary,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Tip => "tip",
            Purpose::Manual => "manual",
            Purpose::Bisect => "bisect",
            Purpose::Boundary => "boundary",
        }
    }

    /// Only a result that would be blamed is run again first.
    fn retried(self) -> bool {
        matches!(self, Purpose::Tip | Purpose::Manual)
    }

    /// Results taken from the cache are reported for tips only (bisection would be noise).
    fn reports_cached(self) -> bool {
        matches!(self, Purpose::Tip | Purpose::Manual)
    }
}

/// Where a check stands for the runner: the result and whether it ran now.
pub(super) struct Verdict {
    pub result: CheckResult,
    pub cached: bool,
    /// The output of the run, whole (the last 64 KiB), for the file-name heuristic.
    pub output: String,
}

impl Verdict {
    fn report(
        &self,
        info: &CommitInfo,
        branch: Option<&str>,
        timeout: std::time::Duration,
    ) -> CheckReport {
        let r = &self.result;
        CheckReport {
            commit: info.id.clone(),
            subject: info.subject.clone(),
            branch: branch.map(str::to_owned),
            outcome: r.outcome,
            reason: check::describe(r.timed_out, r.exit_status, r.signal, timeout),
            exit_status: r.exit_status,
            timed_out: r.timed_out,
            flaky: r.flaky,
            cached: self.cached,
            duration_ms: r.duration_ms,
            output_tail: r.output_tail.clone(),
        }
    }
}

impl Gate {
    /// The watched branches that exist: `quality.branches`, then the `orch/<agent>`
    /// branch of every agent with a worktree. A missing `quality.branches` entry is an
    /// error when `strict` (a command asked), skipped otherwise (it may appear later).
    fn watched(&self, repo: &Repo, strict: bool) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for b in &self.cfg.branches {
            if repo.branch_tip(b)?.is_some() {
                out.push(b.clone());
            } else if strict {
                return Err(BadInput::NoSuchBranch {
                    branch: b.clone(),
                    repo: repo.display_path(),
                }
                .into());
            }
        }
        for a in &self.cfg.worktree_agents {
            let b = format!("orch/{a}");
            if !out.contains(&b) && repo.branch_tip(&b)?.is_some() {
                out.push(b);
            }
        }
        Ok(out)
    }

    /// One pass of the gate: every watched branch whose tip is new is checked (with
    /// `fresh`, every tip, and the check runs even for a tree seen before: `orch check`),
    /// and a red tip is traced to its culprits and repaired as the policy allows.
    pub fn scan(&self, host: &mut dyn Host, fresh: bool) -> Result<Vec<BranchReport>> {
        let repo = self.repo()?;
        let branches = self.watched(&repo, fresh)?;
        let mut slot = self
            .runner
            .lock()
            .map_err(|_| anyhow::anyhow!("the gate runner lock is poisoned"))?;
        let mut reports = Vec::new();
        for b in branches {
            reports.push(self.evaluate(&mut slot, &repo, &b, host, fresh)?);
        }
        Ok(reports)
    }

    /// Evaluates one branch now, even if its tip was seen (after a human approved a
    /// rollback on it: the check runs again, or its tree's result is taken).
    pub fn evaluate_branch(&self, branch: &str, host: &mut dyn Host) -> Result<BranchReport> {
        let repo = self.repo()?;
        let mut slot = self
            .runner
            .lock()
            .map_err(|_| anyhow::anyhow!("the gate runner lock is poisoned"))?;
        if let Ok(mut s) = self.lock_state() {
            s.branch(branch).tip = None;
        }
        self.evaluate(&mut slot, &repo, branch, host, false)
    }

    /// `orch check --rev REV`: runs the check at REV now (nothing is blamed or repaired).
    pub fn check_rev(&self, rev: &str, host: &mut dyn Host) -> Result<CheckReport> {
        let repo = self.repo()?;
        let id = repo.resolve(rev).map_err(|e| {
            match e.downcast::<crate::git::repo::UnknownRevision>() {
                Ok(u) => anyhow::Error::new(BadInput::from(u)),
                Err(e) => e,
            }
        })?;
        let info = repo.commit_info(&id)?;
        let mut slot = self
            .runner
            .lock()
            .map_err(|_| anyhow::anyhow!("the gate runner lock is poisoned"))?;
        let mut runs = 0;
        let v = self.verdict(
            &mut slot,
            &repo,
            &info,
            None,
            Purpose::Manual,
            true,
            host,
            &mut runs,
        )?;
        Ok(v.report(&info, None, self.cfg.timeout))
    }

    fn evaluate(
        &self,
        slot: &mut Option<Scratch>,
        repo: &Repo,
        branch: &str,
        host: &mut dyn Host,
        fresh: bool,
    ) -> Result<BranchReport> {
        let mut report = BranchReport {
            branch: branch.to_owned(),
            ..BranchReport::default()
        };
        let mut fresh = fresh;
        for _ in 0..MAX_ROUNDS {
            let Some(tip) = repo.branch_tip(branch)? else {
                report.notes.push(format!("branch {branch} does not exist"));
                return Ok(report);
            };
            let seen = self
                .lock_state()?
                .branches
                .get(branch)
                .and_then(|b| b.tip.clone());
            if !fresh && seen.as_deref() == Some(tip.as_str()) {
                return Ok(report);
            }
            let info = repo.commit_info(&tip)?;
            let v = self.verdict(
                slot,
                repo,
                &info,
                Some(branch),
                Purpose::Tip,
                fresh,
                host,
                &mut report.runs,
            )?;
            fresh = false;
            report.tip = Some(tip.clone());
            report.outcome = Some(v.result.outcome);
            if report.check.is_none() {
                report.check = Some(v.report(&info, Some(branch), self.cfg.timeout));
            }
            self.after_tip_check(branch, &tip, &v.result, host)?;
            match v.result.outcome {
                Outcome::Green | Outcome::Untestable => return Ok(report),
                Outcome::Red => {}
            }
            let Some(executed) = self.on_red(slot, repo, branch, &info, &v, host, &mut report)?
            else {
                return Ok(report);
            };
            report.executed.push(executed);
            // The branch moved: the next round checks the repaired tip.
        }
        report
            .notes
            .push(format!("{branch} kept changing; the next pass goes on"));
        Ok(report)
    }

    /// Records a tip's result on its branch: a green one is the new last green commit,
    /// closes the proposals still waiting there, and (unless orch made it) ends the run
    /// of consecutive rollbacks; the recheck after a rollback is reported.
    fn after_tip_check(
        &self,
        branch: &str,
        tip: &str,
        result: &CheckResult,
        host: &mut dyn Host,
    ) -> Result<()> {
        let mut state = self.lock_state()?;
        let made_by_orch = state.made_by_orch(tip);
        {
            let b = state.branch(branch);
            b.tip = Some(tip.to_owned());
            b.outcome = Some(result.outcome);
            if result.outcome == Outcome::Green {
                b.last_green = Some(tip.to_owned());
                if !made_by_orch {
                    b.consecutive = 0;
                }
            }
        }
        let mut events = Vec::new();
        for p in state.proposals.iter_mut() {
            if let Some(e) = p.execution.as_mut()
                && e.to == tip
                && e.recheck.is_none()
                && e.undone_at.is_none()
            {
                e.recheck = Some(result.outcome);
                let saved: Vec<&str> = e
                    .checkouts
                    .iter()
                    .filter_map(|c| c.saved.as_ref().map(|s| s.reference.as_str()))
                    .collect();
                let clashes: Vec<&str> = e
                    .checkouts
                    .iter()
                    .flat_map(|c| c.clashes.iter().map(String::as_str))
                    .collect();
                // How a person gets back uncommitted work that clashed with the repair.
                let get_back: Vec<String> = e
                    .checkouts
                    .iter()
                    .flat_map(|c| {
                        c.saved.iter().flat_map(move |s| {
                            c.clashes
                                .iter()
                                .map(move |p| super::exec::get_back(&c.path, s, p))
                        })
                    })
                    .collect();
                events.push(
                    Event::new(EventKind::RollbackExecuted, None)
                        .with("id", p.id.as_str())
                        .with("repair", p.kind.as_str())
                        .with("risk", p.risk.as_str())
                        .with("branch", p.branch.as_str())
                        .with("from", e.from.as_str())
                        .with("to", e.to.as_str())
                        .with("auto", e.auto)
                        .with("replanned", e.replanned)
                        .with("backup_ref", p.backup_ref.as_str())
                        .with("saved", saved)
                        .with("clashes", clashes)
                        .with("get_back", get_back)
                        .with("agents", p.agents.clone())
                        .with("check", outcome_str(result.outcome))
                        .with(
                            "check_reason",
                            check::describe(
                                result.timed_out,
                                result.exit_status,
                                result.signal,
                                self.cfg.timeout,
                            ),
                        ),
                );
            }
            if result.outcome == Outcome::Green && p.status == Status::Pending && p.branch == branch
            {
                p.status = Status::Rejected;
                p.closed = Some(format!("{branch} is green again at {}", short(tip)));
                p.waiting = None;
                events.push(
                    Event::new(EventKind::RollbackRejected, None)
                        .with("id", p.id.as_str())
                        .with("branch", branch)
                        .with("reason", p.closed.clone().unwrap_or_default()),
                );
            }
        }
        self.save(&mut state)?;
        drop(state);
        for e in events {
            host.emit(e);
        }
        Ok(())
    }

    /// The result at `info`: a known one for its tree (unless `fresh`), else a run of the
    /// check in the scratch worktree, run again when red (and blamed later) to tell a
    /// flake from a failure.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn verdict(
        &self,
        slot: &mut Option<Scratch>,
        repo: &Repo,
        info: &CommitInfo,
        branch: Option<&str>,
        purpose: Purpose,
        fresh: bool,
        host: &mut dyn Host,
        runs: &mut usize,
    ) -> Result<Verdict> {
        if !fresh {
            let known = {
                let mut state = self.lock_state()?;
                let known = state.result(&info.tree).cloned();
                if known.is_some() {
                    state.commits.insert(info.id.clone(), info.tree.clone());
                }
                known
            };
            if let Some(result) = known {
                let v = Verdict {
                    result,
                    cached: true,
                    output: String::new(),
                };
                if purpose.reports_cached() {
                    host.emit(self.result_event(&v, info, branch, purpose));
                }
                return Ok(v);
            }
        }
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            anyhow::bail!("the gate is stopping; no new check starts");
        }
        let scratch = match slot {
            Some(s) => s,
            None => {
                crate::state::create_private_dir(&self.cfg.session_dir.join("gate"))?;
                let name = format!("orch-gate-{}", self.cfg.session);
                slot.insert(Scratch::ensure(
                    repo,
                    &name,
                    &self.cfg.scratch_dir(),
                    &info.id,
                )?)
            }
        };
        if let Err(e) = scratch.checkout(&info.id) {
            // A broken scratch worktree is made again on the next run.
            *slot = None;
            return Err(e);
        }
        let cwd = scratch.path().join(repo.subdir());
        let env = [
            ("ORCH_GATE_COMMIT", info.id.clone()),
            ("ORCH_GATE_BRANCH", branch.unwrap_or_default().to_owned()),
            ("ORCH_SESSION", self.cfg.session.clone()),
        ];
        let attempts = if purpose.retried() {
            1 + self.cfg.retries
        } else {
            1
        };
        let mut first: Option<check::CheckRun> = None;
        let mut last;
        let mut attempt = 1;
        loop {
            host.emit(
                Event::new(EventKind::CheckStarted, None)
                    .with("commit", info.id.as_str())
                    .with("branch", branch)
                    .with("purpose", purpose.as_str())
                    .with("attempt", attempt),
            );
            let run = check::run(&self.cfg.check, &cwd, &env, self.cfg.timeout, &self.running)?;
            if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                // Killed because the host stops: not a result of the commit.
                anyhow::bail!("the gate stopped while the check ran");
            }
            *runs += 1;
            last = run;
            if last.outcome != Outcome::Red || attempt >= attempts {
                break;
            }
            first.get_or_insert_with(|| last.clone());
            attempt += 1;
        }
        let flaky = first.is_some() && last.outcome == Outcome::Green;
        if let (true, Some(f)) = (flaky, &first) {
            host.emit(
                Event::new(EventKind::CheckFlaky, None)
                    .with("commit", info.id.as_str())
                    .with("branch", branch)
                    .with("attempts", attempt)
                    .with("first_reason", f.reason(self.cfg.timeout))
                    .with("output_tail", f.tail()),
            );
        }
        let result = CheckResult {
            outcome: last.outcome,
            commit: info.id.clone(),
            exit_status: last.exit_status,
            signal: last.signal,
            timed_out: last.timed_out,
            flaky,
            duration_ms: last.duration.as_millis() as u64,
            output_tail: last.tail(),
            at: unix_now(),
        };
        {
            let mut state = self.lock_state()?;
            state.record(&info.tree, result.clone());
            self.save(&mut state)?;
        }
        let v = Verdict {
            result,
            cached: false,
            output: last.output,
        };
        host.emit(self.result_event(&v, info, branch, purpose));
        Ok(v)
    }

    fn result_event(
        &self,
        v: &Verdict,
        info: &CommitInfo,
        branch: Option<&str>,
        purpose: Purpose,
    ) -> Event {
        let r = &v.result;
        let kind = if r.outcome == Outcome::Green {
            EventKind::CheckPassed
        } else {
            EventKind::CheckFailed
        };
        let mut e = Event::new(kind, None)
            .with("commit", info.id.as_str())
            .with("branch", branch)
            .with("purpose", purpose.as_str())
            .with("duration_ms", r.duration_ms)
            .with("exit_status", r.exit_status)
            .with("output_tail", r.output_tail.clone())
            .with("cached", v.cached);
        if r.outcome != Outcome::Green {
            e = e.with(
                "reason",
                check::describe(r.timed_out, r.exit_status, r.signal, self.cfg.timeout),
            );
        }
        if r.timed_out {
            e = e.with("timed_out", true);
        }
        if r.flaky {
            e = e.with("flaky", true);
        }
        if r.commit != info.id {
            e = e.with("checked_at", r.commit.as_str());
        }
        e
    }

    /// A red tip: find the culprits, propose repairs, and run the first when the policy
    /// says so. Returns the id of the rollback carried out, if one was.
    #[allow(clippy::too_many_arguments)]
    fn on_red(
        &self,
        slot: &mut Option<Scratch>,
        repo: &Repo,
        branch: &str,
        tip: &CommitInfo,
        red: &Verdict,
        host: &mut dyn Host,
        report: &mut BranchReport,
    ) -> Result<Option<String>> {
        let Some((chain, blamed)) =
            self.find_culprits(slot, repo, branch, tip, red, host, report)?
        else {
            let why = format!(
                "no green commit found on the first-parent history of {branch} within reach, so orch cannot tell which commit broke the check; fix it by hand"
            );
            report.notes.push(why.clone());
            host.emit(
                Event::new(EventKind::Escalated, None)
                    .with("branch", branch)
                    .with("commit", tip.id.as_str())
                    .with("reason", why),
            );
            return Ok(None);
        };
        let culprits: Vec<&CommitInfo> = blamed.clone().map(|i| &chain[i]).collect();
        report.culprits = culprits.iter().map(|c| c.id.clone()).collect();
        let green = &chain[0];
        let failure = check::describe(
            red.result.timed_out,
            red.result.exit_status,
            red.result.signal,
            self.cfg.timeout,
        );
        let range = self.red_range(repo, branch, tip, green, &culprits, chain.get(1))?;
        let plans = plan::propose(&range);
        if plans.is_empty() {
            report
                .notes
                .push("every repair for these commits was rejected or undone before; nothing new to propose".into());
            return Ok(None);
        }
        let commits = range.commits();
        let mut state = self.lock_state()?;
        // The branch moved while we looked: the next round looks at the new tip.
        if repo.branch_tip(branch)?.as_deref() != Some(tip.id.as_str()) {
            return Ok(None);
        }
        let mut new_ids = Vec::new();
        let mut ids = Vec::new();
        for p in &plans {
            let id = self.proposal_id(branch, p.kind, &commits);
            ids.push(id.clone());
            let fresh = Proposal {
                id: id.clone(),
                risk: p.risk,
                kind: p.kind,
                commits: commits.clone(),
                files: range.files(),
                agents: range.agents(),
                status: Status::Pending,
                backup_ref: format!("refs/orch/backup/{id}"),
                branch: branch.to_owned(),
                tip: tip.id.clone(),
                new_tip: p.new_tip.clone(),
                green: green.id.clone(),
                why: p.why.clone(),
                created: super::rfc3339_now(),
                waiting: None,
                closed: None,
                output_tail: red.result.output_tail.clone(),
                failure: failure.clone(),
                execution: None,
            };
            match state.proposal_mut(&id) {
                Some(old) if old.status == Status::Pending => {
                    // The same repair for a newer tip: the plan follows the branch.
                    old.tip = fresh.tip;
                    old.new_tip = fresh.new_tip;
                    old.risk = fresh.risk;
                    old.why = fresh.why;
                    old.output_tail = fresh.output_tail;
                    old.failure = fresh.failure;
                }
                Some(_) => {}
                None => {
                    state.proposals.push(fresh);
                    new_ids.push(id);
                }
            }
        }
        report.proposed = ids.clone();
        let now = unix_now();
        let standing = {
            let auto_last_day = state.auto_last_day(now);
            let b = state.branch(branch);
            Standing {
                consecutive: b.consecutive,
                auto_last_day,
                escalated: b.escalated.is_some(),
            }
        };
        let decision = plan::decide(&plans[0], range.no_auto(), self.cfg.limits, standing);
        for (i, (id, plan)) in ids.iter().zip(&plans).enumerate() {
            // Each says why it waits: the first for the policy's reason, the others for
            // their own risk, or because only the least destructive one runs unasked.
            let waiting = match (&decision, i) {
                (Decision::Escalate(why), _) => Some(format!("escalated: {why}")),
                (Decision::Execute, 0) => None,
                (Decision::Wait(why), 0) => Some(why.clone()),
                _ => match plan::decide(plan, range.no_auto(), self.cfg.limits, standing) {
                    Decision::Wait(why) | Decision::Escalate(why) => Some(why),
                    Decision::Execute => Some(
                        "only the least destructive repair runs on its own; approve this one to run it instead"
                            .into(),
                    ),
                },
            };
            if let Some(p) = state.proposal_mut(id)
                && p.status == Status::Pending
            {
                p.waiting = waiting;
            }
        }
        if let Decision::Escalate(why) = &decision {
            state.branch(branch).escalated = Some(why.clone());
        }
        self.save(&mut state)?;
        let proposed: Vec<Proposal> = new_ids
            .iter()
            .filter_map(|id| state.proposal(id).cloned())
            .collect();
        drop(state);
        for p in &proposed {
            host.emit(proposed_event(p));
        }
        match decision {
            Decision::Execute => {
                let id = ids[0].clone();
                self.execute(&id, true, host)?;
                Ok(Some(id))
            }
            Decision::Wait(why) => {
                report.notes.push(format!("waiting for a human: {why}"));
                Ok(None)
            }
            Decision::Escalate(why) => {
                report.notes.push(format!("escalated: {why}"));
                host.emit(
                    Event::new(EventKind::Escalated, None)
                        .with("branch", branch)
                        .with("commit", tip.id.as_str())
                        .with("proposal", ids[0].as_str())
                        .with("reason", why),
                );
                Ok(None)
            }
        }
    }

    /// `(the first-parent chain from the newest green ancestor to the tip, oldest first,
    /// the positions blamed)`; `None` when no green ancestor can be found.
    #[allow(clippy::too_many_arguments)]
    fn find_culprits(
        &self,
        slot: &mut Option<Scratch>,
        repo: &Repo,
        branch: &str,
        tip: &CommitInfo,
        red: &Verdict,
        host: &mut dyn Host,
        report: &mut BranchReport,
    ) -> Result<Option<(Vec<CommitInfo>, std::ops::RangeInclusive<usize>)>> {
        let green_trees: BTreeSet<String> = self
            .lock_state()?
            .trees
            .iter()
            .filter(|(_, r)| r.outcome == Outcome::Green)
            .map(|(t, _)| t.clone())
            .collect();
        let (mut chain, found) = repo.first_parents(&tip.id, MAX_RANGE, |c| {
            c.id != tip.id && green_trees.contains(&c.tree)
        })?;
        if !found {
            // Nothing known green: look 1, 2, 4, … commits back for a green one.
            let mut back = 1;
            let mut boundary = None;
            let oldest = chain.len() - 1;
            for _ in 0..MAX_BOUNDARY_PROBES {
                let at = back.min(oldest);
                if at == 0 {
                    break;
                }
                let v = self.verdict(
                    slot,
                    repo,
                    &chain[at],
                    Some(branch),
                    Purpose::Boundary,
                    false,
                    host,
                    &mut report.runs,
                )?;
                if v.result.outcome == Outcome::Green {
                    boundary = Some(at);
                    break;
                }
                if at == oldest {
                    break;
                }
                back *= 2;
            }
            let Some(b) = boundary else {
                return Ok(None);
            };
            chain.truncate(b + 1);
        }
        chain.reverse();
        let n = chain.len() - 1;
        let hint = if n > 1 && n <= MAX_HINT_CANDIDATES && !red.output.is_empty() {
            let mut candidates = Vec::new();
            for (i, c) in chain.iter().enumerate().skip(1) {
                let files = repo
                    .changed_files(&c.id)?
                    .into_iter()
                    .map(|f| f.path)
                    .collect();
                candidates.push((i, files));
            }
            plan::named_in_output(&red.output, &candidates)
        } else {
            None
        };
        let mut bisect = Bisect::new(n, hint);
        while let Some(p) = bisect.next_probe() {
            let v = self.verdict(
                slot,
                repo,
                &chain[p],
                Some(branch),
                Purpose::Bisect,
                false,
                host,
                &mut report.runs,
            )?;
            bisect.record(p, v.result.outcome);
        }
        let blamed = bisect.culprits();
        Ok(Some((chain, blamed)))
    }

    /// The facts the planner needs, gathered through git (nothing is written but
    /// unreferenced commit objects: the candidate reverts and restores).
    fn red_range(
        &self,
        repo: &Repo,
        branch: &str,
        tip: &CommitInfo,
        green: &CommitInfo,
        culprits: &[&CommitInfo],
        oldest_dropped: Option<&CommitInfo>,
    ) -> Result<RedRange> {
        let commits: Vec<String> = culprits.iter().map(|c| c.id.clone()).collect();
        let agent_tips = self.agent_tips(repo)?;
        let mut suspects = Vec::new();
        for c in culprits {
            let files = repo
                .changed_files(&c.id)?
                .into_iter()
                .map(|f| f.path)
                .collect();
            let agent = self.attribute(repo, c, &agent_tips)?;
            suspects.push(Suspect {
                id: c.id.clone(),
                merge: c.parents.len() > 1,
                agent,
                no_auto: plan::no_auto(&c.trailers),
                files,
            });
        }
        let mut range = RedRange {
            branch: branch.to_owned(),
            tip: tip.id.clone(),
            green: green.id.clone(),
            culprits: suspects,
            dropped_published: match oldest_dropped {
                Some(c) => repo.published(&c.id)?,
                None => false,
            },
            ..RedRange::default()
        };
        let newest_first: Vec<String> = commits.iter().rev().cloned().collect();
        let revert_id = self.proposal_id(branch, Kind::Revert, &commits);
        range.reverted = repo
            .revert_onto(
                &newest_first,
                &tip.id,
                &format!("Orch-Rollback: {revert_id}"),
            )
            .context("trying the revert in memory")?;
        let restore_id = self.proposal_id(branch, Kind::RestoreFiles, &commits);
        let files = range.files();
        range.restored = repo.restore_files_onto(
            &tip.id,
            &green.id,
            &files,
            &restore_message(&files, &green.id, &restore_id),
        )?;
        if let Some(agent) = branch.strip_prefix("orch/")
            && self.cfg.worktree_agents.iter().any(|a| a == agent)
            && range
                .culprits
                .iter()
                .all(|c| c.agent.as_deref() == Some(agent))
            && !repo.checkouts_of(branch)?.is_empty()
        {
            range.own_branch_of = Some(agent.to_owned());
        }
        let state = self.lock_state()?;
        range.rejected = [
            Kind::Revert,
            Kind::RestoreFiles,
            Kind::Reset,
            Kind::AgentReset,
        ]
        .into_iter()
        .filter(|k| {
            state
                .proposal(&self.proposal_id(branch, *k, &commits))
                .is_some_and(|p| p.status != Status::Pending)
        })
        .collect();
        Ok(range)
    }

    /// Each worktree agent's `orch/<agent>` branch tip.
    fn agent_tips(&self, repo: &Repo) -> Result<Vec<(String, String)>> {
        Ok(repo
            .branches_with_prefix("orch/")?
            .into_iter()
            .filter_map(|(b, t)| {
                let a = b.strip_prefix("orch/")?;
                self.cfg
                    .worktree_agents
                    .iter()
                    .any(|w| w == a)
                    .then(|| (a.to_owned(), t))
            })
            .collect())
    }

    /// The agent who made commit `c`, when that is known (see [`plan::attribute`]).
    fn attribute(
        &self,
        repo: &Repo,
        c: &CommitInfo,
        agent_tips: &[(String, String)],
    ) -> Result<Option<String>> {
        let mut holding = Vec::new();
        for (a, t) in agent_tips {
            if repo.contains(t, &c.id)? {
                holding.push(a.as_str());
            }
        }
        Ok(plan::attribute(&Authorship {
            on_agent_branches: holding,
            trailer: plan::agent_trailer(&c.trailers),
            author: &c.author,
            per_agent_identity: self.cfg.per_agent_identity,
            agents: &self.cfg.agents,
        }))
    }

    /// The agents of `commits`, one each (`None`: unknown).
    pub(super) fn agents_of(&self, repo: &Repo, commits: &[String]) -> Result<Vec<Option<String>>> {
        let tips = self.agent_tips(repo)?;
        commits
            .iter()
            .map(|c| self.attribute(repo, &repo.commit_info(c)?, &tips))
            .collect()
    }

    /// A proposal's id: the same repair of the same commits on the same branch of the
    /// same session always gets the same id (so it is never proposed twice), and two
    /// sessions sharing a repository never share a backup ref.
    pub(super) fn proposal_id(&self, branch: &str, kind: Kind, commits: &[String]) -> String {
        let key = format!(
            "{}\0{branch}\0{}\0{}",
            self.cfg.session,
            kind.as_str(),
            commits.join(",")
        );
        crate::digest::sha256_hex(key.as_bytes())[..8].to_owned()
    }
}

pub(super) fn restore_message(files: &[String], green: &str, id: &str) -> String {
    format!(
        "Restore {} file(s) as they were in {}\n\n{}\n\nOrch-Rollback: {id}\n",
        files.len(),
        short(green),
        files.join("\n")
    )
}

pub(super) fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Green => "green",
        Outcome::Red => "red",
        Outcome::Untestable => "untestable",
    }
}

fn proposed_event(p: &Proposal) -> Event {
    let mut e = Event::new(
        EventKind::RollbackProposed,
        p.agents.first().map(String::as_str),
    )
    .with("id", p.id.as_str())
    .with("repair", p.kind.as_str())
    .with("risk", p.risk.as_str())
    .with("branch", p.branch.as_str())
    .with("commits", p.commits.clone())
    .with("files", p.files.clone())
    .with("agents", p.agents.clone())
    .with("why", p.why.as_str());
    if let Some(w) = &p.waiting {
        e = e.with("waiting", w.as_str());
    }
    e
}
