//! `cargo bench --bench gate`: the quality gate's numbers (SPEC §6).
//!
//! 1. New commit → `check_started`: `orch supervise` on a private tmux server watches a
//!    repository; a commit is made with the git command line and the bench reads the
//!    supervisor's stdout until the `check_started` event for that commit (debounce
//!    included). Target ≤ 300 ms.
//! 2. Red → proposal, the check's own run time excluded: in-process, from the tip's
//!    `check_failed` to the first `rollback_proposed`, minus the time of the bisection's
//!    check runs (each from its `check_started` to its result). Target ≤ 100 ms.
//! 3. A revert on a 10,000-commit repository: `Gate::approve` of a revert proposal, the
//!    snapshot excluded (the bench's host takes none). Target ≤ 100 ms.
//! 4. Check runs to bisect 16 commits, for every culprit position, without and with the
//!    file named in the failure output. Target ≤ 5.
//!
//! Knobs: `ORCH_BENCH_COMMITS` (20 commits for 1), `ORCH_BENCH_REPEATS` (15 for 2 and 10
//! for 3), `ORCH_BENCH_HISTORY` (10000 for 3).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use orch::gate::{Config, Gate, Host, Kind, plan::Limits};
use orch::supervisor::event::{Event, EventKind};

use support::{median, ms};

/// A repository in `dir` driven by the git command line, its configuration isolated.
struct Git {
    dir: PathBuf,
    home: PathBuf,
}

impl Git {
    fn init(dir: &Path) -> Git {
        let home = dir.join(".home");
        std::fs::create_dir_all(&home).expect("home");
        let g = Git {
            dir: dir.to_path_buf(),
            home,
        };
        g.run(&["init", "-q", "-b", "main"]);
        std::fs::write(dir.join(".gitignore"), ".home/\norch.yaml\nstate/\n").expect("ignore");
        g
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("git");
        c.args(args)
            .current_dir(&self.dir)
            .env("HOME", &self.home)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "bench")
            .env("GIT_AUTHOR_EMAIL", "b@x")
            .env("GIT_COMMITTER_NAME", "bench")
            .env("GIT_COMMITTER_EMAIL", "b@x");
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn commit(&self, file: &str, text: &str, msg: &str) -> String {
        let p = self.dir.join(file);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
        self.run(&["add", "-A"]);
        self.run(&["commit", "-q", "-m", msg]);
        self.run(&["rev-parse", "HEAD"])
    }
}

/// Records every event with the moment it was emitted.
#[derive(Default)]
struct Rec {
    events: Vec<(Instant, Event)>,
}

impl Host for Rec {
    fn emit(&mut self, event: Event) {
        self.events.push((Instant::now(), event));
    }
    fn snapshot(&mut self) -> anyhow::Result<bool> {
        Ok(false)
    }
    fn deliver_now(&mut self, _agent: &str) {}
    fn restart(&mut self, _agent: &str) -> anyhow::Result<()> {
        Ok(())
    }
}

fn config(repo: &Path, session_dir: &Path, check: &str) -> Config {
    Config {
        session: "bench".into(),
        session_dir: session_dir.to_path_buf(),
        repo: repo.to_path_buf(),
        check: check.to_owned(),
        timeout: Duration::from_secs(60),
        branches: vec!["main".into()],
        retries: 0,
        per_agent_identity: false,
        agents: vec!["w1".into(), "w2".into()],
        worktree_agents: Vec::new(),
        limits: Limits {
            auto_max_risk: orch::layout::Risk::None,
            max_consecutive: 3,
            max_auto_per_day: 10,
        },
    }
}

const PLAIN: &str = "! grep -rq BROKEN src";
const NAMING: &str = "if grep -rl BROKEN src; then exit 1; fi";

fn main() {
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let want = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    if want("latency") {
        commit_to_check_started();
    }
    if want("proposal") {
        red_to_proposal();
    }
    if want("revert") {
        revert_on_a_long_history();
    }
    if want("bisect") {
        bisect_runs();
    }
}

/// 1. New commit → `check_started`, through `orch supervise`.
fn commit_to_check_started() {
    let server = support::Server::new("gate");
    let dir = server.dir.path();
    let git = Git::init(dir);
    git.commit("src/a.txt", "0\n", "base");
    std::fs::write(
        dir.join("orch.yaml"),
        "session: gatebench\nsnapshot: { interval: 1h }\nquality: { check: 'true', timeout: 30s }\nagents:\n  - { name: w1, role: WORKER, command: 'exec sleep 3600' }\n",
    )
    .expect("layout");
    let mut child = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["--socket", &server.socket, "supervise"])
        .current_dir(dir)
        .env("ORCH_STATE_DIR", dir.join("state"))
        .env("HOME", &git.home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("TMUX")
        .env_remove("ORCH_LAYOUT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("supervise");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<(Instant, serde_json::Value)>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v = serde_json::from_str(&line).unwrap_or(serde_json::Value::Null);
            if tx.send((Instant::now(), v)).is_err() {
                break;
            }
        }
    });
    let wait =
        |kind: &str, commit: Option<&str>, rx: &mpsc::Receiver<(Instant, serde_json::Value)>| {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let (at, v) = rx
                    .recv_timeout(left)
                    .unwrap_or_else(|_| panic!("no {kind}"));
                if v["kind"] == kind && commit.is_none_or(|c| v["commit"] == c) {
                    return at;
                }
            }
        };
    wait("check_passed", None, &rx);
    let n = support::env_num("ORCH_BENCH_COMMITS", 20);
    let mut lat = Vec::new();
    for i in 1..=n {
        std::fs::write(dir.join("src/a.txt"), format!("{i}\n")).expect("write");
        git.run(&["add", "src/a.txt"]);
        let t0 = Instant::now();
        git.run(&["commit", "-q", "-m", &format!("commit {i}")]);
        let sha = git.run(&["rev-parse", "HEAD"]);
        let at = wait("check_started", Some(&sha), &rx);
        lat.push(at.duration_since(t0));
        wait("check_passed", Some(&sha), &rx);
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let max = lat.iter().max().copied().unwrap_or_default();
    let mut sorted = lat.clone();
    sorted.sort();
    println!(
        "new commit -> check_started ({n} commits, from `git commit` starting): median {}, p90 {}, max {} (target <= 300 ms)",
        ms(median(lat)),
        ms(sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)]),
        ms(max)
    );
}

/// The planning time of one pass: from the tip's `check_failed` to the first
/// `rollback_proposed`, without the bisection's check runs.
fn planning_time(events: &[(Instant, Event)]) -> Duration {
    let failed = events
        .iter()
        .position(|(_, e)| e.kind == EventKind::CheckFailed)
        .expect("check_failed");
    let proposed = events
        .iter()
        .position(|(_, e)| e.kind == EventKind::RollbackProposed)
        .expect("rollback_proposed");
    let mut checks = Duration::ZERO;
    let mut started = None;
    for (at, e) in &events[failed + 1..proposed] {
        match e.kind {
            EventKind::CheckStarted => started = Some(*at),
            EventKind::CheckPassed | EventKind::CheckFailed => {
                if let Some(s) = started.take() {
                    checks += at.duration_since(s);
                }
            }
            _ => {}
        }
    }
    events[proposed].0.duration_since(events[failed].0) - checks
}

/// A repository with a green base the gate knows, then `n` commits, the `culprit`-th
/// breaking src/f<k>.txt. Returns the gate's events of the pass over the red tip and the
/// bisection's runs.
fn red_pass(n: usize, culprit: usize, check: &str) -> (Vec<(Instant, Event)>, usize) {
    let dir = tempfile::tempdir().expect("dir");
    let session = tempfile::tempdir().expect("session");
    let git = Git::init(dir.path());
    git.commit("src/base.txt", "base\n", "base");
    let gate = Gate::open(config(dir.path(), session.path(), check)).expect("gate");
    gate.scan(&mut Rec::default(), false).expect("green");
    for k in 1..=n {
        let text = if k == culprit {
            format!("f{k} BROKEN\n")
        } else {
            format!("f{k}\n")
        };
        git.commit(&format!("src/f{k}.txt"), &text, &format!("commit {k}"));
    }
    let mut rec = Rec::default();
    gate.scan(&mut rec, false).expect("red");
    let runs = rec
        .events
        .iter()
        .filter(|(_, e)| {
            e.kind == EventKind::CheckStarted
                && e.fields.get("purpose").and_then(|p| p.as_str()) == Some("bisect")
        })
        .count();
    (rec.events, runs)
}

/// 2. Red result → proposal.
fn red_to_proposal() {
    let repeats = support::env_num("ORCH_BENCH_REPEATS", 15);
    let mut one = Vec::new();
    let mut sixteen = Vec::new();
    for i in 0..repeats {
        one.push(planning_time(&red_pass(1, 1, PLAIN).0));
        sixteen.push(planning_time(&red_pass(16, 1 + i % 16, PLAIN).0));
    }
    let max1 = one.iter().max().copied().unwrap_or_default();
    let max16 = sixteen.iter().max().copied().unwrap_or_default();
    println!(
        "red -> rollback_proposed, check runs excluded ({repeats} runs): one new commit median {} (max {}); 16 new commits, bisected, median {} (max {}) (target <= 100 ms)",
        ms(median(one)),
        ms(max1),
        ms(median(sixteen)),
        ms(max16)
    );
}

/// Writes a linear history of `n` commits on main with `git fast-import`.
fn fast_import(git: &Git, n: usize) {
    let mut child = git
        .cmd(&["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("fast-import");
    {
        let mut w = std::io::BufWriter::new(child.stdin.take().expect("stdin"));
        for k in 1..=n {
            let msg = format!("history {k}");
            let body = format!("{k}\n");
            write!(
                w,
                "commit refs/heads/main\nmark :{k}\ncommitter bench <b@x> {} +0000\ndata {}\n{msg}\n",
                1_700_000_000 + k,
                msg.len() + 1
            )
            .expect("write");
            if k > 1 {
                writeln!(w, "from :{}", k - 1).expect("write");
            }
            write!(
                w,
                "M 100644 inline src/f{}.txt\ndata {}\n{body}\n",
                k % 100,
                body.len()
            )
            .expect("write");
        }
    }
    assert!(child.wait().expect("fast-import").success());
    git.run(&["checkout", "-q", "-f", "main"]);
}

/// 3. Executing a revert on a long history.
fn revert_on_a_long_history() {
    let history = support::env_num("ORCH_BENCH_HISTORY", 10_000);
    let repeats = support::env_num("ORCH_BENCH_REPEATS", 10).min(10);
    let dir = tempfile::tempdir().expect("dir");
    let session = tempfile::tempdir().expect("session");
    let git = Git::init(dir.path());
    let built = Instant::now();
    fast_import(&git, history);
    let count = git.run(&["rev-list", "--count", "main"]);
    let gate = Gate::open(config(dir.path(), session.path(), PLAIN)).expect("gate");
    gate.scan(&mut Rec::default(), false).expect("green");
    let mut took = Vec::new();
    for i in 0..repeats {
        git.commit(
            "src/f1.txt",
            &format!("BROKEN {i}\n"),
            &format!("culprit {i}\n\nOrch-Agent: w1"),
        );
        git.commit(
            &format!("src/new{i}.txt"),
            "fine\n",
            &format!("innocent {i}"),
        );
        let mut rec = Rec::default();
        gate.scan(&mut rec, false).expect("red");
        let revert = gate
            .list()
            .expect("list")
            .into_iter()
            .find(|p| p.kind == Kind::Revert && p.status == orch::gate::Status::Pending)
            .expect("a revert proposal");
        let t0 = Instant::now();
        gate.approve(&revert.id, &mut rec).expect("approve");
        took.push(t0.elapsed());
        gate.evaluate_branch("main", &mut rec).expect("recheck");
    }
    let max = took.iter().max().copied().unwrap_or_default();
    println!(
        "revert executed on a {count}-commit repository (built in {:.1} s), snapshot excluded, {repeats} runs: median {}, max {} (target <= 100 ms)",
        built.elapsed().as_secs_f64(),
        ms(median(took)),
        ms(max)
    );
}

/// 4. Check runs to bisect 16 commits.
fn bisect_runs() {
    let mut plain = Vec::new();
    let mut named = Vec::new();
    for culprit in 1..=16 {
        plain.push(red_pass(16, culprit, PLAIN).1);
        named.push(red_pass(16, culprit, NAMING).1);
    }
    let stats = |v: &[usize]| {
        let mut s = v.to_vec();
        s.sort();
        (s[s.len() / 2], s[s.len() - 1])
    };
    let (pm, px) = stats(&plain);
    let (nm, nx) = stats(&named);
    println!(
        "check runs to bisect 16 commits, every culprit position: plain halving median {pm}, max {px}; with the file named in the output median {nm}, max {nx} (target <= 5; the red tip's own run not counted)"
    );
    println!("  plain per position: {plain:?}");
    println!("  named per position: {named:?}");
}
