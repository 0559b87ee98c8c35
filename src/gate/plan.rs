//! The planner: facts about a red range in, repairs out, least destructive first, each
//! with its risk; and the policy that says whether the first one runs on its own. Pure:
//! no git, no files, no clock (time comes in as numbers), so every rule is unit-tested
//! with fixtures.
//!
//! The repairs (SPEC §4 kinds), in order:
//! - `revert` of the culprit commit(s): new commits undoing them on the tip. `low` when
//!   they are one known agent's, none is a merge, and they revert cleanly; else `medium`.
//!   Not proposed when they do not revert cleanly.
//! - `restore_files`: the files the culprits touched, as they were in the last green
//!   commit, as one new commit: `medium` (it also undoes later changes to those files).
//! - `reset` of the branch to the last green commit: `high` (it drops every commit since).
//! - `agent_reset`: the culprit agent's own `orch/<agent>` branch and worktree reset to the
//!   last green commit and the agent restarted with a handover: `critical`. Only when the
//!   red branch is that agent's branch.
//!
//! Whatever rewrites commits already on a remote-tracking ref is at least `high`. A
//! culprit whose message says `Orch-No-Auto-Rollback: true` makes every repair wait for a
//! human. A kind rejected once for the same commits is never proposed again.

use serde::{Deserialize, Serialize};

/// How much a repair can destroy or surprise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    Low,
    Medium,
    High,
    Critical,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
            Risk::Critical => "critical",
        }
    }

    /// Whether `rollback.auto_max_risk` lets orch run a repair of this risk unasked.
    pub fn allowed_by(self, auto_max_risk: crate::layout::Risk) -> bool {
        use crate::layout::Risk as Max;
        match auto_max_risk {
            Max::None => false,
            Max::Low => self <= Risk::Low,
            Max::Medium => self <= Risk::Medium,
            Max::High => self <= Risk::High,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Revert,
    RestoreFiles,
    Reset,
    AgentReset,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Revert => "revert",
            Kind::RestoreFiles => "restore_files",
            Kind::Reset => "reset",
            Kind::AgentReset => "agent_reset",
        }
    }

    /// Whether the repair takes commits out of the branch's history.
    pub fn rewrites(self) -> bool {
        matches!(self, Kind::Reset | Kind::AgentReset)
    }
}

/// A culprit commit as the planner sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Suspect {
    pub id: String,
    pub merge: bool,
    pub agent: Option<String>,
    /// `Orch-No-Auto-Rollback: true` in its message.
    pub no_auto: bool,
    pub files: Vec<String>,
}

/// What the runner learnt about a red range, through git, before planning.
#[derive(Clone, Debug, Default)]
pub struct RedRange {
    pub branch: String,
    pub tip: String,
    /// The newest green ancestor.
    pub green: String,
    /// Oldest first.
    pub culprits: Vec<Suspect>,
    /// Some commit a reset would drop is already on a remote-tracking ref.
    pub dropped_published: bool,
    /// The tip after reverting the culprits (made in memory); `None`: they conflict.
    pub reverted: Option<String>,
    /// The tip after restoring the culprits' files; `None`: that changes nothing.
    pub restored: Option<String>,
    /// The red branch is this agent's own `orch/<agent>` branch, checked out in its
    /// worktree, and every culprit is the agent's.
    pub own_branch_of: Option<String>,
    /// Kinds a human rejected before for exactly these culprits.
    pub rejected: Vec<Kind>,
}

/// One repair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub kind: Kind,
    pub risk: Risk,
    /// The commit the branch moves to.
    pub new_tip: String,
    /// What it repairs and why this way, in one sentence.
    pub why: String,
}

impl RedRange {
    pub fn commits(&self) -> Vec<String> {
        self.culprits.iter().map(|c| c.id.clone()).collect()
    }

    /// The files the culprits touched, sorted, once each.
    pub fn files(&self) -> Vec<String> {
        let mut f: Vec<String> = self
            .culprits
            .iter()
            .flat_map(|c| c.files.iter().cloned())
            .collect();
        f.sort();
        f.dedup();
        f
    }

    /// The agents the culprits are attributed to (unknown ones left out), sorted.
    pub fn agents(&self) -> Vec<String> {
        let mut a: Vec<String> = self
            .culprits
            .iter()
            .filter_map(|c| c.agent.clone())
            .collect();
        a.sort();
        a.dedup();
        a
    }

    /// Every culprit is known and they are all the same agent's.
    fn one_agents(&self) -> bool {
        self.culprits.iter().all(|c| c.agent.is_some()) && self.agents().len() == 1
    }

    /// A culprit asks never to be rolled back without a human.
    pub fn no_auto(&self) -> bool {
        self.culprits.iter().any(|c| c.no_auto)
    }
}

fn short(id: &str) -> &str {
    crate::git::repo::short(id)
}

/// The repairs for a red range, least destructive first.
pub fn propose(r: &RedRange) -> Vec<Plan> {
    let mut plans = Vec::new();
    let names: Vec<&str> = r.culprits.iter().map(|c| short(&c.id)).collect();
    let whose = match r.agents().as_slice() {
        [] => String::new(),
        [one] => format!("{one}'s "),
        many => format!("{}'s ", many.join(" and ")),
    };
    let commits = if names.len() == 1 {
        format!("{whose}commit {}", names[0])
    } else {
        format!("{whose}commits {}", names.join(", "))
    };
    if let Some(tip) = &r.reverted {
        let simple = r.one_agents() && r.culprits.iter().all(|c| !c.merge);
        plans.push(Plan {
            kind: Kind::Revert,
            risk: if simple { Risk::Low } else { Risk::Medium },
            new_tip: tip.clone(),
            why: format!("revert {commits}, which broke the check on {}", r.branch),
        });
    }
    if let Some(tip) = &r.restored {
        plans.push(Plan {
            kind: Kind::RestoreFiles,
            risk: Risk::Medium,
            new_tip: tip.clone(),
            why: format!(
                "restore the {} file(s) {commits} touched as they were in {}",
                r.files().len(),
                short(&r.green)
            ),
        });
    }
    plans.push(Plan {
        kind: Kind::Reset,
        risk: Risk::High,
        new_tip: r.green.clone(),
        why: format!(
            "reset {} to {}, the last green commit, dropping every commit since",
            r.branch,
            short(&r.green)
        ),
    });
    if let Some(agent) = &r.own_branch_of {
        plans.push(Plan {
            kind: Kind::AgentReset,
            risk: Risk::Critical,
            new_tip: r.green.clone(),
            why: format!(
                "reset {agent}'s branch and worktree to {} and restart {agent} with a handover",
                short(&r.green)
            ),
        });
    }
    for p in &mut plans {
        if p.kind.rewrites() && r.dropped_published {
            p.risk = p.risk.max(Risk::High);
        }
    }
    plans.retain(|p| !r.rejected.contains(&p.kind));
    plans
}

/// The limits of `rollback:` and where the branch stands against them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub auto_max_risk: crate::layout::Risk,
    pub max_consecutive: u32,
    pub max_auto_per_day: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    /// Rollbacks on this branch since the last green commit orch did not make itself.
    pub consecutive: u32,
    /// Automatic rollbacks in the last 24 hours, on any branch.
    pub auto_last_day: u32,
    /// An escalation waits for a human.
    pub escalated: bool,
}

/// What to do with the least destructive repair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Execute,
    /// Wait for `orch rollback approve` (why, for the user).
    Wait(String),
    /// Stop automatic action until a human acts (why).
    Escalate(String),
}

pub fn decide(first: &Plan, no_auto: bool, limits: Limits, standing: Standing) -> Decision {
    if no_auto {
        return Decision::Wait(
            "a culprit's message says Orch-No-Auto-Rollback: true; a human decides".into(),
        );
    }
    if !first.risk.allowed_by(limits.auto_max_risk) {
        return Decision::Wait(format!(
            "risk {} is above rollback.auto_max_risk ({})",
            first.risk.as_str(),
            auto_name(limits.auto_max_risk)
        ));
    }
    if standing.escalated {
        return Decision::Wait("escalated earlier; waiting for a human".into());
    }
    if standing.consecutive >= limits.max_consecutive {
        return Decision::Escalate(format!(
            "{} rollback(s) in a row without a green commit in between (rollback.max_consecutive: {})",
            standing.consecutive, limits.max_consecutive
        ));
    }
    if standing.auto_last_day >= limits.max_auto_per_day {
        return Decision::Escalate(format!(
            "{} automatic rollback(s) in the last 24 hours (rollback.max_auto_per_day: {})",
            standing.auto_last_day, limits.max_auto_per_day
        ));
    }
    Decision::Execute
}

fn auto_name(r: crate::layout::Risk) -> &'static str {
    use crate::layout::Risk as Max;
    match r {
        Max::None => "none",
        Max::Low => "low",
        Max::Medium => "medium",
        Max::High => "high",
    }
}

/// What is known about who made a commit.
#[derive(Clone, Debug, Default)]
pub struct Authorship<'a> {
    /// Agents (with worktrees) whose `orch/<agent>` branch holds the commit.
    pub on_agent_branches: Vec<&'a str>,
    /// The value of an `Orch-Agent:` trailer.
    pub trailer: Option<&'a str>,
    pub author: &'a str,
    /// `quality.identity: per-agent`: panes commit under their agent's name.
    pub per_agent_identity: bool,
    /// Every agent of the layout.
    pub agents: &'a [String],
}

/// The agent a commit is attributed to: its `orch/<agent>` branch (when exactly one agent
/// branch holds it), else its `Orch-Agent` trailer, else its author when panes commit as
/// their agents. Unknown stays unknown: nothing is guessed.
pub fn attribute(a: &Authorship<'_>) -> Option<String> {
    let known = |name: &str| a.agents.iter().any(|x| x == name);
    if let [one] = a.on_agent_branches.as_slice()
        && known(one)
    {
        return Some((*one).to_owned());
    }
    if let Some(t) = a.trailer.map(str::trim)
        && known(t)
    {
        return Some(t.to_owned());
    }
    if a.per_agent_identity && known(a.author) {
        return Some(a.author.to_owned());
    }
    None
}

/// Whether a message carries `Orch-No-Auto-Rollback: true`.
pub fn no_auto(trailers: &[(String, String)]) -> bool {
    trailers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("Orch-No-Auto-Rollback") && v.trim().eq_ignore_ascii_case("true")
    })
}

/// The `Orch-Agent` trailer's value.
pub fn agent_trailer(trailers: &[(String, String)]) -> Option<&str> {
    trailers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Orch-Agent"))
        .map(|(_, v)| v.as_str())
}

/// Of `candidates` (`(position, files touched)`), the one whose files the failure output
/// names most (full paths count double, bare file names once); the newest wins a tie.
/// `None` when the output names none of them.
pub fn named_in_output(output: &str, candidates: &[(usize, Vec<String>)]) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (pos, files) in candidates {
        let mut score = 0;
        for f in files {
            if output.contains(f.as_str()) {
                score += 2;
            } else if let Some(name) = f.rsplit('/').next()
                && name.len() >= 4
                && name.contains('.')
                && names_word(output, name)
            {
                score += 1;
            }
        }
        if score > 0 && best.is_none_or(|(s, p)| score > s || (score == s && *pos > p)) {
            best = Some((score, *pos));
        }
    }
    best.map(|(_, p)| p)
}

/// `name` appears in `text` not glued to other name characters.
fn names_word(text: &str, name: &str) -> bool {
    let glued = |c: char| c.is_alphanumeric() || c == '_' || c == '-' || c == '.';
    text.match_indices(name).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + name.len()..].chars().next();
        before.is_none_or(|c| !glued(c) || c == '/') && after.is_none_or(|c| !glued(c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Risk as Max;

    fn suspect(id: &str, agent: Option<&str>) -> Suspect {
        Suspect {
            id: id.repeat(40 / id.len()),
            agent: agent.map(str::to_owned),
            files: vec![format!("src/{id}.rs")],
            ..Suspect::default()
        }
    }

    fn range(culprits: Vec<Suspect>) -> RedRange {
        RedRange {
            branch: "main".into(),
            tip: "t".repeat(40),
            green: "g".repeat(40),
            culprits,
            reverted: Some("r".repeat(40)),
            restored: Some("s".repeat(40)),
            ..RedRange::default()
        }
    }

    fn kinds(plans: &[Plan]) -> Vec<(Kind, Risk)> {
        plans.iter().map(|p| (p.kind, p.risk)).collect()
    }

    #[test]
    fn one_agents_clean_commit_is_a_low_risk_revert_first() {
        let plans = propose(&range(vec![suspect("a", Some("worker2"))]));
        assert_eq!(
            kinds(&plans),
            [
                (Kind::Revert, Risk::Low),
                (Kind::RestoreFiles, Risk::Medium),
                (Kind::Reset, Risk::High)
            ]
        );
        assert_eq!(plans[0].new_tip, "r".repeat(40));
        assert_eq!(plans[2].new_tip, "g".repeat(40));
        assert!(
            plans[0].why.contains("worker2's commit aaaaaaa"),
            "{}",
            plans[0].why
        );
    }

    #[test]
    fn unknown_agents_merges_and_several_agents_make_a_revert_medium() {
        let unknown = propose(&range(vec![suspect("a", None)]));
        assert_eq!(unknown[0].risk, Risk::Medium);
        let mut merge = suspect("a", Some("w"));
        merge.merge = true;
        assert_eq!(propose(&range(vec![merge]))[0].risk, Risk::Medium);
        let two = propose(&range(vec![
            suspect("a", Some("w1")),
            suspect("b", Some("w2")),
        ]));
        assert_eq!(two[0].risk, Risk::Medium);
        assert!(two[0].why.contains("w1 and w2's commits"), "{}", two[0].why);
        let same = propose(&range(vec![
            suspect("a", Some("w")),
            suspect("b", Some("w")),
        ]));
        assert_eq!(same[0].risk, Risk::Low);
    }

    #[test]
    fn a_conflicting_revert_and_a_restore_that_changes_nothing_are_not_proposed() {
        let mut r = range(vec![suspect("a", Some("w"))]);
        r.reverted = None;
        r.restored = None;
        assert_eq!(kinds(&propose(&r)), [(Kind::Reset, Risk::High)]);
    }

    #[test]
    fn an_agents_own_red_branch_also_gets_a_critical_agent_reset() {
        let mut r = range(vec![suspect("a", Some("worker1"))]);
        r.branch = "orch/worker1".into();
        r.own_branch_of = Some("worker1".into());
        let plans = propose(&r);
        assert_eq!(
            plans.last().map(|p| (p.kind, p.risk)),
            Some((Kind::AgentReset, Risk::Critical))
        );
        assert!(
            plans
                .last()
                .is_some_and(|p| p.why.contains("restart worker1"))
        );
    }

    #[test]
    fn rewriting_published_commits_is_at_least_high_and_rejected_kinds_stay_away() {
        let mut r = range(vec![suspect("a", Some("w"))]);
        r.dropped_published = true;
        r.own_branch_of = Some("w".into());
        let plans = propose(&r);
        for p in &plans {
            if p.kind.rewrites() {
                assert!(p.risk >= Risk::High);
            }
        }
        r.rejected = vec![Kind::Revert, Kind::Reset];
        assert_eq!(
            kinds(&propose(&r)),
            [
                (Kind::RestoreFiles, Risk::Medium),
                (Kind::AgentReset, Risk::Critical)
            ]
        );
    }

    fn limits(max: Max) -> Limits {
        Limits {
            auto_max_risk: max,
            max_consecutive: 3,
            max_auto_per_day: 10,
        }
    }

    fn plan(risk: Risk) -> Plan {
        Plan {
            kind: Kind::Revert,
            risk,
            new_tip: String::new(),
            why: String::new(),
        }
    }

    #[test]
    fn auto_max_risk_decides_what_runs_unasked() {
        let s = Standing::default();
        assert_eq!(
            decide(&plan(Risk::Low), false, limits(Max::Low), s),
            Decision::Execute
        );
        assert_eq!(
            decide(&plan(Risk::Medium), false, limits(Max::Medium), s),
            Decision::Execute
        );
        assert!(
            matches!(decide(&plan(Risk::Medium), false, limits(Max::Low), s), Decision::Wait(w) if w.contains("above"))
        );
        assert!(matches!(
            decide(&plan(Risk::Low), false, limits(Max::None), s),
            Decision::Wait(_)
        ));
        assert!(matches!(
            decide(&plan(Risk::Critical), false, limits(Max::High), s),
            Decision::Wait(_)
        ));
    }

    #[test]
    fn no_auto_waits_and_limits_escalate() {
        let s = Standing::default();
        assert!(
            matches!(decide(&plan(Risk::Low), true, limits(Max::High), s), Decision::Wait(w) if w.contains("Orch-No-Auto-Rollback"))
        );
        let tired = Standing {
            consecutive: 3,
            ..s
        };
        assert!(
            matches!(decide(&plan(Risk::Low), false, limits(Max::High), tired), Decision::Escalate(w) if w.contains("max_consecutive"))
        );
        let busy = Standing {
            auto_last_day: 10,
            ..s
        };
        assert!(
            matches!(decide(&plan(Risk::Low), false, limits(Max::High), busy), Decision::Escalate(w) if w.contains("max_auto_per_day"))
        );
        let escalated = Standing {
            escalated: true,
            ..s
        };
        assert!(matches!(
            decide(&plan(Risk::Low), false, limits(Max::High), escalated),
            Decision::Wait(_)
        ));
    }

    #[test]
    fn attribution_prefers_the_agent_branch_then_the_trailer_then_the_identity() {
        let agents = vec!["worker1".to_owned(), "worker2".to_owned()];
        let base = Authorship {
            author: "worker2",
            agents: &agents,
            ..Authorship::default()
        };
        assert_eq!(attribute(&base), None, "an author name alone is not proof");
        let per = Authorship {
            per_agent_identity: true,
            ..base.clone()
        };
        assert_eq!(attribute(&per).as_deref(), Some("worker2"));
        let trailer = Authorship {
            trailer: Some(" worker1 "),
            ..per.clone()
        };
        assert_eq!(attribute(&trailer).as_deref(), Some("worker1"));
        let branch = Authorship {
            on_agent_branches: vec!["worker2"],
            ..trailer.clone()
        };
        assert_eq!(attribute(&branch).as_deref(), Some("worker2"));
        // Two agent branches hold it (one merged the other's work): the branch says nothing.
        let both = Authorship {
            on_agent_branches: vec!["worker1", "worker2"],
            ..trailer
        };
        assert_eq!(attribute(&both).as_deref(), Some("worker1"));
        let stranger = Authorship {
            trailer: Some("mallory"),
            author: "mallory",
            per_agent_identity: true,
            ..base
        };
        assert_eq!(attribute(&stranger), None, "never guessed");
    }

    #[test]
    fn trailers_are_read_case_insensitively() {
        let t = vec![
            ("orch-no-auto-rollback".to_owned(), "TRUE".to_owned()),
            ("Orch-Agent".to_owned(), "worker3".to_owned()),
        ];
        assert!(no_auto(&t));
        assert!(!no_auto(&[(
            "Orch-No-Auto-Rollback".into(),
            "false".into()
        )]));
        assert_eq!(agent_trailer(&t), Some("worker3"));
    }

    #[test]
    fn the_output_points_at_the_commit_whose_files_it_names() {
        let c = vec![
            (1, vec!["src/parser.rs".to_owned()]),
            (2, vec!["src/lexer.rs".to_owned(), "README.md".to_owned()]),
            (3, vec!["docs/guide.md".to_owned()]),
        ];
        let out = "thread 'main' panicked at src/lexer.rs:41:9:\nassertion failed";
        assert_eq!(named_in_output(out, &c), Some(2));
        assert_eq!(named_in_output("error in parser.rs line 3", &c), Some(1));
        assert_eq!(
            named_in_output("error in myparser.rs", &c),
            None,
            "not a word"
        );
        assert_eq!(named_in_output("all good", &c), None);
        // A full path beats a bare name; the newest wins a tie.
        let c2 = vec![
            (1, vec!["a/x.rs".to_owned()]),
            (4, vec!["b/x.rs".to_owned()]),
        ];
        assert_eq!(named_in_output("failed: a/x.rs", &c2), Some(1));
        assert_eq!(named_in_output("failed: x.rs", &c2), Some(4));
    }
}
