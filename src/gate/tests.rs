//! The runner on real repositories: temp dirs, commits made with the git command line
//! (its configuration isolated: HOME, GIT_CONFIG_GLOBAL, GIT_CONFIG_NOSYSTEM), real check
//! commands, and a host that records what the gate asks of it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::*;
use crate::layout::Risk as Max;
use crate::messaging::queue::Queue;

struct Fx {
    repo: tempfile::TempDir,
    session: tempfile::TempDir,
    home: tempfile::TempDir,
    /// Every run of the check appends a line here.
    counter: PathBuf,
}

const MARKER: &str = "BROKEN";

impl Fx {
    fn new() -> Fx {
        let fx = Fx {
            repo: tempfile::tempdir().expect("repo"),
            session: tempfile::tempdir().expect("session"),
            home: tempfile::tempdir().expect("home"),
            counter: PathBuf::new(),
        };
        let counter = fx.home.path().join("runs");
        let fx = Fx { counter, ..fx };
        fx.git(&["init", "-q", "-b", "main"]);
        fx
    }

    fn path(&self) -> &Path {
        self.repo.path()
    }

    fn git_in(&self, dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("HOME", self.home.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "tester")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "tester")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn git(&self, args: &[&str]) -> String {
        self.git_in(self.path(), args)
    }

    /// Writes `files` in `dir`, commits them all with `msg`, returns the commit.
    fn commit_in(&self, dir: &Path, files: &[(&str, &str)], msg: &str) -> String {
        for (f, text) in files {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, text).expect("write");
            self.git_in(dir, &["add", f]);
        }
        self.git_in(dir, &["commit", "-q", "--allow-empty", "-m", msg]);
        self.git_in(dir, &["rev-parse", "HEAD"])
    }

    fn commit(&self, files: &[(&str, &str)], msg: &str) -> String {
        self.commit_in(self.path(), files, msg)
    }

    fn tip(&self, branch: &str) -> String {
        self.git(&["rev-parse", branch])
    }

    fn show(&self, rev: &str, path: &str) -> Option<String> {
        Command::new("git")
            .args(["show", &format!("{rev}:{path}")])
            .current_dir(self.path())
            .env("HOME", self.home.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(&self.counter)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    /// Red while any file under src/ holds the marker; prints the files that do.
    fn check(&self) -> String {
        format!(
            "echo run >> '{}'; if grep -rl {MARKER} src 2>/dev/null; then exit 1; fi; exit 0",
            self.counter.display()
        )
    }

    fn config(&self, check: &str, max: Max) -> Config {
        Config {
            session: "s".into(),
            session_dir: self.session.path().to_path_buf(),
            repo: self.path().to_path_buf(),
            check: check.to_owned(),
            timeout: Duration::from_secs(30),
            branches: vec!["main".into()],
            retries: 0,
            per_agent_identity: false,
            agents: vec!["w1".into(), "w2".into(), "boss".into()],
            worktree_agents: Vec::new(),
            limits: plan::Limits {
                auto_max_risk: max,
                max_consecutive: 3,
                max_auto_per_day: 10,
            },
        }
    }

    fn gate(&self, max: Max) -> Gate {
        Gate::open(self.config(&self.check(), max)).expect("gate")
    }

    fn pending(&self, agent: &str) -> Vec<String> {
        Queue::new(self.session.path())
            .pending(agent)
            .expect("queue")
            .into_iter()
            .map(|m| m.text)
            .collect()
    }
}

/// Records everything; `on_snapshot` runs when the gate takes its snapshot.
#[derive(Default)]
struct Rec {
    events: Vec<Event>,
    snapshots: usize,
    delivered: Vec<String>,
    restarted: Vec<String>,
    on_snapshot: Option<Box<dyn FnMut()>>,
}

impl Host for Rec {
    fn emit(&mut self, event: Event) {
        self.events.push(event);
    }
    fn snapshot(&mut self) -> Result<bool> {
        self.snapshots += 1;
        if let Some(f) = self.on_snapshot.as_mut() {
            f();
        }
        Ok(true)
    }
    fn deliver_now(&mut self, agent: &str) {
        self.delivered.push(agent.to_owned());
    }
    fn restart(&mut self, agent: &str) -> Result<()> {
        self.restarted.push(agent.to_owned());
        Ok(())
    }
}

impl Rec {
    fn kinds(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| {
                serde_json::to_value(e.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect()
    }

    fn count(&self, kind: &str) -> usize {
        self.kinds().iter().filter(|k| *k == kind).count()
    }

    fn last(&self, kind: &str) -> serde_json::Value {
        let e = self
            .events
            .iter()
            .rev()
            .find(|e| {
                serde_json::to_value(e.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .as_deref()
                    == Some(kind)
            })
            .unwrap_or_else(|| panic!("no {kind} event in {:?}", self.kinds()));
        serde_json::to_value(e).expect("json")
    }
}

fn proposal(g: &Gate, kind: Kind) -> Proposal {
    g.list()
        .expect("list")
        .into_iter()
        .find(|p| p.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} proposal"))
}

/// main: green base, a culprit by w1 on src/a.txt, an innocent commit on src/b.txt.
fn red_after_innocent(fx: &Fx) -> (String, String, String) {
    let green = fx.commit(
        &[("src/a.txt", "one\ntwo\nthree\n"), ("src/b.txt", "b\n")],
        "base",
    );
    let culprit = fx.commit(
        &[("src/a.txt", &format!("one\ntwo {MARKER}\nthree\n"))],
        "w1 breaks a\n\nOrch-Agent: w1",
    );
    let innocent = fx.commit(&[("src/b.txt", "b\nmore b\n")], "w2 improves b");
    (green, culprit, innocent)
}

#[test]
fn a_low_risk_revert_runs_on_its_own_and_keeps_the_innocent_commit() {
    let fx = Fx::new();
    let green = fx.commit(&[("src/a.txt", "one\n"), ("src/b.txt", "b\n")], "base");
    let g = fx.gate(Max::Low);
    let mut host = Rec::default();
    g.scan(&mut host, false).expect("scan");
    assert_eq!(
        g.state().expect("state").branches["main"]
            .last_green
            .as_deref(),
        Some(green.as_str())
    );
    let culprit = fx.commit(
        &[("src/a.txt", &format!("one {MARKER}\n"))],
        "break a\n\nOrch-Agent: w1",
    );
    let innocent = fx.commit(&[("src/b.txt", "b\nmore b\n")], "improve b");

    let reports = g.scan(&mut host, false).expect("scan");
    assert_eq!(reports[0].culprits, vec![culprit.clone()]);
    let p = proposal(&g, Kind::Revert);
    assert_eq!((p.risk, p.status), (Risk::Low, Status::Executed));
    assert_eq!(p.agents, vec!["w1".to_owned()]);
    let tip = fx.tip("main");
    assert_eq!(
        fx.git(&["rev-parse", "main~1"]),
        innocent,
        "a new commit on top"
    );
    assert_eq!(fx.show(&tip, "src/a.txt").as_deref(), Some("one\n"));
    assert_eq!(fx.show(&tip, "src/b.txt").as_deref(), Some("b\nmore b\n"));
    assert_eq!(
        fx.git(&["rev-parse", &p.backup_ref]),
        innocent,
        "backup ref at the red tip"
    );
    assert!(
        fx.git(&["log", "-1", "--format=%B", "main"])
            .contains(&format!("Orch-Rollback: {}", p.id))
    );
    // The backup ref has a reflog that says why it exists.
    assert!(
        fx.git(&["reflog", "show", &p.backup_ref])
            .contains("before rollback")
    );
    // Checked again: green, and said so.
    let ev = host.last("rollback_executed");
    assert_eq!(ev["check"], "green");
    assert_eq!(ev["auto"], true);
    assert_eq!(ev["to"], tip.as_str());
    assert_eq!(host.snapshots, 1);
    // The culprit agent was told to stop (delivered at once) and then what happened;
    // the others got a notice.
    assert_eq!(host.delivered, ["w1", "w1"]);
    let told = fx.pending("w1");
    assert!(told[0].contains("STOP"), "{told:?}");
    assert!(
        told[1].contains(&format!("rollback {} done", p.id)),
        "{told:?}"
    );
    assert!(fx.pending("w2")[0].contains("notice"));
    // The siblings are closed.
    assert_eq!(proposal(&g, Kind::Reset).status, Status::Rejected);
    // Nothing new: nothing runs.
    let before = fx.runs();
    g.scan(&mut host, false).expect("scan");
    assert_eq!(fx.runs(), before);
}

#[test]
fn restore_files_when_the_revert_conflicts() {
    let fx = Fx::new();
    let green = fx.commit(
        &[("src/a.txt", "one\ntwo\nthree\n"), ("src/b.txt", "b\n")],
        "base",
    );
    let g = fx.gate(Max::Medium);
    let mut host = Rec::default();
    g.scan(&mut host, false).expect("scan");
    fx.commit(
        &[("src/a.txt", &format!("one\ntwo {MARKER}\nthree\n"))],
        "break",
    );
    // A later commit edits the same line: the revert no longer applies.
    fx.commit(
        &[
            ("src/a.txt", &format!("one\ntwo {MARKER} and more\nthree\n")),
            ("src/b.txt", "b2\n"),
        ],
        "edit",
    );
    g.scan(&mut host, false).expect("scan");
    let list = g.list().expect("list");
    assert!(
        list.iter().all(|p| p.kind != Kind::Revert),
        "a conflicting revert is not proposed"
    );
    let p = proposal(&g, Kind::RestoreFiles);
    assert_eq!((p.risk, p.status), (Risk::Medium, Status::Executed));
    let tip = fx.tip("main");
    assert_eq!(fx.show(&tip, "src/a.txt"), fx.show(&green, "src/a.txt"));
    assert_eq!(
        fx.show(&tip, "src/b.txt").as_deref(),
        Some("b2\n"),
        "other files keep their changes"
    );
    assert_eq!(host.last("rollback_executed")["check"], "green");
}

#[test]
fn a_reset_waits_for_approval_then_moves_the_branch_to_the_green_commit() {
    let fx = Fx::new();
    let g = fx.gate(Max::None);
    let mut host = Rec::default();
    let (green, _culprit, innocent) = red_after_innocent(&fx);
    // The first pass finds no green ancestor known, and looks back for one.
    g.scan(&mut host, false).expect("scan");
    let reset = proposal(&g, Kind::Reset);
    assert_eq!((reset.risk, reset.status), (Risk::High, Status::Pending));
    assert!(
        reset
            .waiting
            .as_deref()
            .is_some_and(|w| w.contains("auto_max_risk")),
        "{:?}",
        reset.waiting
    );
    assert_eq!(fx.tip("main"), innocent, "nothing moved");
    assert_eq!(host.snapshots, 0);
    let done = g
        .approve(&reset.id[..5], &mut host)
        .expect("approve by prefix");
    assert_eq!(done.to, green);
    assert_eq!(fx.tip("main"), green);
    assert_eq!(fx.git(&["rev-parse", &done.backup_ref]), innocent);
    g.evaluate_branch("main", &mut host).expect("recheck");
    let ev = host.last("rollback_executed");
    assert_eq!(
        (ev["check"].as_str(), ev["auto"].as_bool()),
        (Some("green"), Some(false))
    );
    // Approving again is bad input.
    let again = g
        .approve(&reset.id, &mut host)
        .expect_err("executed already");
    assert!(again.downcast_ref::<BadInput>().is_some(), "{again:#}");
}

#[test]
fn an_agent_reset_resets_its_branch_and_worktree_and_restarts_it() {
    let fx = Fx::new();
    let green = fx.commit(&[("src/a.txt", "one\n"), ("src/b.txt", "b\n")], "base");
    let wt = fx.home.path().join("wt-w1");
    fx.git(&[
        "worktree",
        "add",
        "-q",
        "-b",
        "orch/w1",
        wt.to_str().expect("utf8"),
    ]);
    let mut cfg = fx.config(&fx.check(), Max::None);
    cfg.worktree_agents = vec!["w1".into()];
    let g = Gate::open(cfg).expect("gate");
    let mut host = Rec::default();
    g.scan(&mut host, false).expect("scan");
    fx.commit_in(
        &wt,
        &[("src/a.txt", &format!("one {MARKER}\n"))],
        "w1 breaks it",
    );
    // Uncommitted work in the agent's tree: a tracked change and an untracked file.
    std::fs::write(wt.join("src/b.txt"), "b edited\n").expect("write");
    std::fs::write(wt.join("notes.txt"), "mine\n").expect("write");
    g.scan(&mut host, false).expect("scan");
    let p = proposal(&g, Kind::AgentReset);
    assert_eq!(p.risk, Risk::Critical);
    assert_eq!(p.agents, vec!["w1".to_owned()], "attributed by its branch");
    let done = g.approve(&p.id, &mut host).expect("approve");
    assert_eq!(fx.tip("orch/w1"), green);
    assert_eq!(
        std::fs::read_to_string(wt.join("src/a.txt")).expect("a"),
        "one\n"
    );
    assert_eq!(
        std::fs::read_to_string(wt.join("src/b.txt")).expect("b"),
        "b\n",
        "tracked change reset"
    );
    assert_eq!(
        std::fs::read_to_string(wt.join("notes.txt")).expect("n"),
        "mine\n",
        "untracked kept"
    );
    assert_eq!(fx.git_in(&wt, &["status", "--porcelain"]), "?? notes.txt");
    assert_eq!(host.restarted, ["w1"]);
    // The tracked change is saved and the user is told how to get it back.
    assert!(
        done.notes
            .iter()
            .any(|n| n.contains("refs/orch/saved/") && n.contains("src/b.txt")),
        "{:?}",
        done.notes
    );
    assert_eq!(
        fx.show(&format!("refs/orch/saved/{}", p.id), "src/b.txt")
            .as_deref(),
        Some("b edited\n")
    );
    // Undo puts all of it back.
    g.undo(&p.id, &mut host).expect("undo");
    assert_eq!(
        std::fs::read_to_string(wt.join("src/b.txt")).expect("b"),
        "b edited\n"
    );
    assert!(
        std::fs::read_to_string(wt.join("src/a.txt"))
            .expect("a")
            .contains(MARKER)
    );
}

/// Bisects `n` commits after a green base where the `culprit`-th breaks src/f<k>.txt;
/// with `named` the check prints the broken file's name. Returns the bisection's runs,
/// the culprits found and the one expected.
fn bisect_runs(n: usize, culprit: usize, named: bool) -> (usize, Vec<String>, Vec<String>) {
    let fx = Fx::new();
    let check = if named {
        fx.check()
    } else {
        format!(
            "echo run >> '{}'; ! grep -rq {MARKER} src",
            fx.counter.display()
        )
    };
    let g = Gate::open(fx.config(&check, Max::None)).expect("gate");
    let mut host = Rec::default();
    fx.commit(&[("src/base.txt", "base\n")], "base");
    g.scan(&mut host, false).expect("green first");
    let mut commits = Vec::new();
    for k in 1..=n {
        let text = if k == culprit {
            format!("f{k} {MARKER}\n")
        } else {
            format!("f{k}\n")
        };
        commits.push(fx.commit(&[(&format!("src/f{k}.txt"), &text)], &format!("commit {k}")));
    }
    let before = fx.runs();
    let r = g.scan(&mut host, false).expect("scan");
    // Runs of the bisection alone: all runs minus the tip's one.
    (
        fx.runs() - before - 1,
        r[0].culprits.clone(),
        vec![commits[culprit - 1].clone()],
    )
}

#[test]
fn bisection_finds_the_culprit_among_5_and_16_commits() {
    // 5 commits, culprit 4: probes 2 (green), 3 (green), 4 (red).
    let (runs, found, want) = bisect_runs(5, 4, false);
    assert_eq!((found, runs), (want, 3));
    // 16 commits, culprit 5: probes 8, 4, 6, 5.
    let (runs, found, want) = bisect_runs(16, 5, false);
    assert_eq!((found, runs), (want, 4));
}

#[test]
fn the_file_named_in_the_output_cuts_the_runs() {
    // The check prints src/f11.txt: its parent (green) and it (red) are tested first.
    let (runs, found, want) = bisect_runs(16, 11, true);
    assert_eq!((found, runs), (want, 2));
    // Plain halving would take 4.
    let (runs, _, _) = bisect_runs(16, 11, false);
    assert_eq!(runs, 4);
}

#[test]
fn a_flaky_check_is_flaky_and_nothing_is_proposed() {
    let fx = Fx::new();
    fx.commit(&[("src/a.txt", "a\n")], "base");
    let mut cfg = fx.config("", Max::High);
    // Red on its first run ever, green after.
    let flag = fx.home.path().join("ran-once");
    cfg.check = format!(
        "echo run >> '{}'; if [ ! -e '{}' ]; then touch '{}'; echo flaky failure; exit 1; fi",
        fx.counter.display(),
        flag.display(),
        flag.display()
    );
    cfg.retries = 1;
    let g = Gate::open(cfg).expect("gate");
    let mut host = Rec::default();
    let r = g.scan(&mut host, false).expect("scan");
    assert_eq!(fx.runs(), 2);
    assert_eq!(host.count("check_flaky"), 1);
    assert_eq!(host.count("check_started"), 2);
    let check = r[0].check.as_ref().expect("checked");
    assert!(check.flaky);
    assert_eq!(check.outcome, Outcome::Green);
    assert!(
        g.list().expect("list").is_empty(),
        "no proposal for a flake"
    );
    assert_eq!(host.last("check_flaky")["output_tail"][0], "flaky failure");
}

#[test]
fn a_tree_checked_before_is_not_checked_again() {
    let fx = Fx::new();
    let g = fx.gate(Max::Low);
    let mut host = Rec::default();
    fx.commit(&[("src/a.txt", "a\n")], "base");
    g.scan(&mut host, false).expect("scan");
    fx.commit(&[("src/a.txt", "a2\n")], "change");
    g.scan(&mut host, false).expect("scan");
    assert_eq!(fx.runs(), 2);
    // Back to the first tree (a revert of the change): green at once, nothing runs.
    fx.git(&["revert", "--no-edit", "HEAD"]);
    let r = g.scan(&mut host, false).expect("scan");
    assert_eq!(fx.runs(), 2);
    let check = r[0].check.as_ref().expect("reported");
    assert!(check.cached);
    assert_eq!(check.outcome, Outcome::Green);
    assert_eq!(host.last("check_passed")["cached"], true);
    // An explicit check runs anyway.
    g.scan(&mut host, true).expect("fresh");
    assert_eq!(fx.runs(), 3);
}

#[test]
fn dirty_and_untracked_work_survives_a_reset_and_undo_brings_it_back_exactly() {
    let fx = Fx::new();
    let g = fx.gate(Max::None);
    let mut host = Rec::default();
    let (green, _culprit, innocent) = red_after_innocent(&fx);
    std::fs::write(fx.path().join("notes.txt"), "tracked notes\n").expect("write");
    fx.git(&["add", "notes.txt"]);
    fx.git(&["commit", "-q", "-m", "notes"]);
    let red_tip = fx.tip("main");
    let _ = innocent;
    g.scan(&mut host, false).expect("scan");
    // The user's checkout (main is checked out there): an unstaged change, a staged
    // one, an untracked file, and an unstaged change in a file the reset rewrites.
    std::fs::write(
        fx.path().join("notes.txt"),
        "tracked notes\nunstaged line\n",
    )
    .expect("w");
    std::fs::write(fx.path().join("src/b.txt"), "b\nmore b\nstaged\n").expect("w");
    fx.git(&["add", "src/b.txt"]);
    std::fs::write(
        fx.path().join("src/b.txt"),
        "b\nmore b\nstaged\nand unstaged\n",
    )
    .expect("w");
    std::fs::write(fx.path().join("scratch.txt"), "untracked\n").expect("w");
    std::fs::write(
        fx.path().join("src/a.txt"),
        format!("one\ntwo {MARKER}\nthree\nmine\n"),
    )
    .expect("w");
    let status_before = fx.git(&["status", "--porcelain=v1", "-uall"]);
    let staged_before = fx.git(&["diff", "--cached"]);
    let files = ["notes.txt", "src/a.txt", "src/b.txt", "scratch.txt"];
    let read = |f: &str| std::fs::read_to_string(fx.path().join(f)).ok();
    let contents_before: Vec<Option<String>> = files.iter().map(|f| read(f)).collect();

    let reset = proposal(&g, Kind::Reset);
    let done = g.approve(&reset.id, &mut host).expect("approve");
    assert_eq!(fx.tip("main"), green);
    // Files the reset does not touch keep their changes; the untracked file stays.
    assert_eq!(read("scratch.txt").as_deref(), Some("untracked\n"));
    // notes.txt is not in the green commit: the reset removes it (its change is saved).
    assert_eq!(read("notes.txt"), None);
    assert_eq!(read("src/a.txt").as_deref(), Some("one\ntwo\nthree\n"));
    // Every clash is saved and named with the command that gets it back.
    for f in ["src/a.txt", "src/b.txt", "notes.txt"] {
        assert!(
            done.notes
                .iter()
                .any(|n| n.contains(f) && n.contains("refs/orch/saved/")),
            "{f}: {:?}",
            done.notes
        );
    }
    let saved = format!("refs/orch/saved/{}", reset.id);
    assert_eq!(
        fx.show(&saved, "notes.txt").as_deref(),
        Some("tracked notes\nunstaged line\n")
    );
    assert_eq!(
        fx.show(&format!("{saved}^2"), "src/b.txt").as_deref(),
        Some("b\nmore b\nstaged\n"),
        "the index, saved"
    );
    assert_eq!(
        fx.show(&format!("{saved}^3"), "scratch.txt").as_deref(),
        Some("untracked\n")
    );
    assert_eq!(fx.git(&["rev-parse", &format!("{saved}^1")]), red_tip);

    // The recheck's event carries the same commands, for whoever watches the events.
    g.evaluate_branch("main", &mut host).expect("recheck");
    let ev = host.last("rollback_executed");
    let cmds: Vec<&str> = ev["get_back"]
        .as_array()
        .expect("get_back")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        cmds.iter()
            .any(|c| c.contains("checkout refs/orch/saved/") && c.ends_with("src/a.txt")),
        "{cmds:?}"
    );

    let undone = g.undo(&reset.id, &mut host).expect("undo");
    assert!(undone.notes.is_empty(), "{:?}", undone.notes);
    assert_eq!(fx.tip("main"), red_tip);
    assert_eq!(
        fx.git(&["status", "--porcelain=v1", "-uall"]),
        status_before
    );
    assert_eq!(fx.git(&["diff", "--cached"]), staged_before);
    let contents_after: Vec<Option<String>> = files.iter().map(|f| read(f)).collect();
    assert_eq!(contents_after, contents_before);
    assert_eq!(host.count("rollback_undone"), 1);
    assert_eq!(proposal(&g, Kind::Reset).status, Status::Undone);
    // Undoing twice is bad input.
    assert!(
        g.undo(&reset.id, &mut host)
            .expect_err("twice")
            .downcast_ref::<BadInput>()
            .is_some()
    );
}

#[test]
fn a_commit_landing_before_the_move_makes_the_plan_be_made_again_and_it_is_kept() {
    let fx = Fx::new();
    let g = fx.gate(Max::None);
    let mut host = Rec::default();
    let (_green, culprit, innocent) = red_after_innocent(&fx);
    g.scan(&mut host, false).expect("scan");
    let revert = proposal(&g, Kind::Revert);
    assert_eq!(revert.tip, innocent);
    // An agent commits while the rollback starts (as the snapshot is taken).
    let repo = fx.path().to_path_buf();
    let home = fx.home.path().to_path_buf();
    host.on_snapshot = Some(Box::new(move || {
        std::fs::write(repo.join("src/c.txt"), "late work\n").expect("write");
        for args in [
            vec!["add", "src/c.txt"],
            vec!["commit", "-q", "-m", "late commit"],
        ] {
            let ok = Command::new("git")
                .args(&args)
                .current_dir(&repo)
                .env("HOME", &home)
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_AUTHOR_NAME", "w2")
                .env("GIT_AUTHOR_EMAIL", "w2@x")
                .env("GIT_COMMITTER_NAME", "w2")
                .env("GIT_COMMITTER_EMAIL", "w2@x")
                .status()
                .expect("git")
                .success();
            assert!(ok);
        }
    }));
    let done = g.approve(&revert.id, &mut host).expect("approve");
    assert_eq!(done.replanned, 1);
    let late = fx.git(&["log", "-1", "--format=%H", "--grep=late commit", "main"]);
    assert_eq!(
        fx.git(&["rev-parse", "main~1"]),
        late,
        "the late commit is kept, below the revert"
    );
    assert_eq!(done.from, late);
    let tip = fx.tip("main");
    assert_eq!(fx.show(&tip, "src/c.txt").as_deref(), Some("late work\n"));
    assert!(
        !fx.show(&tip, "src/a.txt")
            .unwrap_or_default()
            .contains(MARKER)
    );
    assert_eq!(fx.git(&["rev-parse", &done.backup_ref]), late);
    let _ = culprit;
}

#[test]
fn a_moved_ref_is_never_overwritten() {
    let fx = Fx::new();
    let a = fx.commit(&[("x", "1")], "a");
    let b = fx.commit(&[("x", "2")], "b");
    let repo = crate::git::repo::Repo::open(fx.path()).expect("repo");
    // Expecting `a` while main is at `b`: refused, main untouched.
    let err = repo
        .move_ref("refs/heads/main", &a, &a, "test")
        .expect_err("moved");
    let moved = err
        .downcast_ref::<crate::git::repo::RefMoved>()
        .expect("RefMoved");
    assert_eq!(moved.now, b);
    assert_eq!(fx.tip("main"), b);
    repo.move_ref("refs/heads/main", &a, &b, "test")
        .expect("cas");
    assert_eq!(fx.tip("main"), a);
}

#[test]
fn a_rejected_proposal_does_nothing_and_is_not_proposed_again() {
    let fx = Fx::new();
    let g = fx.gate(Max::None);
    let mut host = Rec::default();
    let (_g, _c, innocent) = red_after_innocent(&fx);
    g.scan(&mut host, false).expect("scan");
    let revert = proposal(&g, Kind::Revert);
    let rejected = g.reject(&revert.id, &mut host).expect("reject");
    assert_eq!(rejected.status, Status::Rejected);
    assert_eq!(fx.tip("main"), innocent);
    assert_eq!(host.count("rollback_rejected"), 1);
    assert!(
        g.approve(&revert.id, &mut host)
            .expect_err("rejected")
            .downcast_ref::<BadInput>()
            .is_some()
    );
    // A newer red tip with the same culprit: the revert is not proposed again.
    fx.commit(&[("src/d.txt", "d\n")], "more");
    g.scan(&mut host, false).expect("scan");
    let reverts: Vec<Proposal> = g
        .list()
        .expect("list")
        .into_iter()
        .filter(|p| p.kind == Kind::Revert)
        .collect();
    assert_eq!(reverts.len(), 1);
    assert_eq!(reverts[0].status, Status::Rejected);
    assert_eq!(
        proposal(&g, Kind::Reset).tip,
        fx.tip("main"),
        "the pending ones follow the tip"
    );
    assert_eq!(host.snapshots, 0);
}

#[test]
fn orch_no_auto_rollback_waits_for_a_human() {
    let fx = Fx::new();
    let g = fx.gate(Max::High);
    let mut host = Rec::default();
    fx.commit(&[("src/a.txt", "a\n")], "base");
    g.scan(&mut host, false).expect("scan");
    let red = fx.commit(
        &[("src/a.txt", &format!("a {MARKER}\n"))],
        "risky\n\nOrch-Agent: w2\nOrch-No-Auto-Rollback: true",
    );
    g.scan(&mut host, false).expect("scan");
    let p = proposal(&g, Kind::Revert);
    assert_eq!((p.risk, p.status), (Risk::Low, Status::Pending));
    assert!(
        p.waiting
            .as_deref()
            .is_some_and(|w| w.contains("Orch-No-Auto-Rollback"))
    );
    assert_eq!(fx.tip("main"), red);
    g.approve(&p.id, &mut host).expect("a human may");
    assert_ne!(fx.tip("main"), red);
}

#[test]
fn max_consecutive_rollbacks_then_escalated() {
    let fx = Fx::new();
    let mut cfg = fx.config(&fx.check(), Max::Low);
    cfg.limits.max_consecutive = 1;
    let g = Gate::open(cfg).expect("gate");
    let mut host = Rec::default();
    fx.commit(&[("src/a.txt", "a\n")], "base");
    g.scan(&mut host, false).expect("scan");
    fx.commit(
        &[("src/a.txt", &format!("a {MARKER}\n"))],
        "bad 1\n\nOrch-Agent: w1",
    );
    g.scan(&mut host, false).expect("scan");
    assert_eq!(host.count("rollback_executed"), 1);
    // Broken again, with no green commit of an agent in between.
    fx.commit(
        &[("src/b.txt", &format!("b {MARKER}\n"))],
        "bad 2\n\nOrch-Agent: w1",
    );
    let red = fx.tip("main");
    g.scan(&mut host, false).expect("scan");
    assert_eq!(
        host.count("rollback_executed"),
        1,
        "no second automatic rollback"
    );
    assert_eq!(fx.tip("main"), red);
    let esc = host.last("escalated");
    assert!(
        esc["reason"]
            .as_str()
            .is_some_and(|r| r.contains("max_consecutive")),
        "{esc}"
    );
    assert!(
        g.state().expect("state").branches["main"]
            .escalated
            .is_some()
    );
    // Still escalated on a newer red tip: waits, no second escalation event.
    fx.commit(&[("src/c.txt", "c\n")], "more");
    g.scan(&mut host, false).expect("scan");
    assert_eq!(host.count("escalated"), 1);
    assert_eq!(fx.tip("main"), fx.git(&["rev-parse", "HEAD"]));
    // A human acts: the escalation ends.
    let p = g
        .list()
        .expect("list")
        .into_iter()
        .find(|p| p.status == Status::Pending && p.kind == Kind::Revert)
        .expect("pending");
    g.approve(&p.id, &mut host).expect("approve");
    assert!(
        g.state().expect("state").branches["main"]
            .escalated
            .is_none()
    );
}

#[test]
fn max_auto_per_day_then_escalated() {
    let fx = Fx::new();
    let mut cfg = fx.config(&fx.check(), Max::Low);
    cfg.limits.max_auto_per_day = 1;
    let g = Gate::open(cfg).expect("gate");
    let mut host = Rec::default();
    fx.commit(&[("src/a.txt", "a\n")], "base");
    g.scan(&mut host, false).expect("scan");
    fx.commit(
        &[("src/a.txt", &format!("a {MARKER}\n"))],
        "bad\n\nOrch-Agent: w1",
    );
    g.scan(&mut host, false).expect("scan");
    // A green commit by an agent ends the consecutive run, not the daily count.
    fx.commit(&[("src/ok.txt", "fine\n")], "good");
    g.scan(&mut host, false).expect("scan");
    fx.commit(
        &[("src/b.txt", &format!("b {MARKER}\n"))],
        "bad again\n\nOrch-Agent: w1",
    );
    g.scan(&mut host, false).expect("scan");
    assert_eq!(host.count("rollback_executed"), 1);
    assert!(
        host.last("escalated")["reason"]
            .as_str()
            .is_some_and(|r| r.contains("max_auto_per_day"))
    );
}

#[test]
fn state_survives_a_new_gate() {
    let fx = Fx::new();
    let (_g, _c, _i) = red_after_innocent(&fx);
    {
        let g = fx.gate(Max::None);
        g.scan(&mut Rec::default(), false).expect("scan");
    }
    let g = fx.gate(Max::None);
    assert_eq!(g.list().expect("list").len(), 3);
    let runs = fx.runs();
    g.scan(&mut Rec::default(), false).expect("scan");
    assert_eq!(fx.runs(), runs, "the tip was evaluated before");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(fx.session.path().join(state::STATE_FILE))
            .expect("state")
            .permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn the_scratch_worktree_keeps_build_caches_and_drops_leftovers() {
    let fx = Fx::new();
    fx.commit(&[(".gitignore", "target/\n"), ("src/a.txt", "a\n")], "base");
    let log = fx.home.path().join("seen");
    let check = format!(
        "ls target >> '{0}' 2>/dev/null; ls junk.txt >> '{0}' 2>/dev/null; mkdir -p target; touch target/cache junk.txt; git status --porcelain >> '{0}'",
        log.display()
    );
    let g = Gate::open(fx.config(&check, Max::None)).expect("gate");
    let mut host = Rec::default();
    g.scan(&mut host, false).expect("first");
    fx.commit(&[("src/a.txt", "a2\n")], "change");
    g.scan(&mut host, false).expect("second");
    let seen = std::fs::read_to_string(&log).expect("log");
    // Run 1: empty tree, then junk.txt untracked. Run 2: target/cache kept (ignored),
    // junk.txt gone (untracked leftovers are removed), the tree as committed.
    assert_eq!(seen, "?? junk.txt\ncache\n?? junk.txt\n", "{seen}");
    // Never the user's checkout.
    assert!(!fx.path().join("target").exists());
    assert!(!fx.path().join("junk.txt").exists());
    assert_eq!(fx.git(&["status", "--porcelain"]), "");
    // No branch of the gate's is left in the repository.
    assert_eq!(fx.git(&["branch", "--format=%(refname:short)"]), "main");
}

#[test]
fn a_commit_the_check_cannot_test_is_stepped_around() {
    let fx = Fx::new();
    // Exit 125 while src/SKIP exists (only at commit 2), as `git bisect run` means it.
    let check = format!(
        "echo run >> '{}'; [ -e src/SKIP ] && exit 125; ! grep -rq {MARKER} src",
        fx.counter.display()
    );
    let g = Gate::open(fx.config(&check, Max::None)).expect("gate");
    let mut host = Rec::default();
    fx.commit(&[("src/base.txt", "base\n")], "base");
    g.scan(&mut host, false).expect("green");
    let mut commits = Vec::new();
    commits.push(fx.commit(&[("src/f1.txt", "1\n")], "1"));
    commits.push(fx.commit(&[("src/SKIP", "\n")], "2"));
    fx.git(&["rm", "-q", "src/SKIP"]);
    commits.push(fx.commit(&[("src/f3.txt", "3\n")], "3"));
    commits.push(fx.commit(&[("src/f4.txt", &format!("{MARKER}\n"))], "4 breaks it"));
    commits.push(fx.commit(&[("src/f5.txt", "5\n")], "5"));
    let r = g.scan(&mut host, false).expect("red");
    assert_eq!(r[0].culprits, vec![commits[3].clone()]);
    let untestable = host
        .events
        .iter()
        .filter(|e| {
            e.fields.get("reason").and_then(|v| v.as_str()) == Some("cannot test (exit status 125)")
        })
        .count();
    assert_eq!(untestable, 1, "commit 2 was tried once and skipped");
    // 2 (cannot test), 1 (green), 3 (green), 4 (red).
    assert_eq!(r[0].runs, 5, "the tip and four probes");
}

#[test]
fn undo_refuses_when_the_branch_moved_since_the_rollback() {
    let fx = Fx::new();
    let g = fx.gate(Max::Low);
    let mut host = Rec::default();
    fx.commit(&[("src/a.txt", "a\n")], "base");
    g.scan(&mut host, false).expect("scan");
    fx.commit(
        &[("src/a.txt", &format!("a {MARKER}\n"))],
        "bad\n\nOrch-Agent: w1",
    );
    g.scan(&mut host, false).expect("scan");
    let revert = proposal(&g, Kind::Revert);
    assert_eq!(revert.status, Status::Executed);
    let later = fx.commit(&[("src/b.txt", "new work\n")], "work after the rollback");
    let err = g.undo(&revert.id, &mut host).expect_err("moved");
    assert!(
        err.downcast_ref::<BadInput>().is_none(),
        "a failure, not bad input"
    );
    assert!(
        format!("{err:#}").contains("moved since rollback"),
        "{err:#}"
    );
    assert_eq!(fx.tip("main"), later, "the later commit is not dropped");
    assert_eq!(proposal(&g, Kind::Revert).status, Status::Executed);
}
