//! `cargo bench --bench snapshot`: how long `orch snapshot` takes for 9 panes of 10,000
//! lines each on a private tmux server. Prints the median of 10 runs with an empty store
//! (every blob written) and of 10 runs of the same idle session (blobs already stored),
//! both as the wall time of the command and as the time orch reports for capture + store;
//! then restores after `kill-server` until every pane shows its replayed history.

mod support;

use std::time::{Duration, Instant};

use support::{Server, median, ms};

const RUNS: usize = 10;

/// The "N ms" orch prints for capture + store.
fn reported(stdout: &str) -> Duration {
    let ms = stdout
        .lines()
        .find(|l| l.starts_with("snapshot "))
        .and_then(|l| l.rsplit(", ").next())
        .and_then(|s| s.trim_end_matches(" ms").parse().ok())
        .unwrap_or(0);
    Duration::from_millis(ms)
}

fn main() {
    let server = Server::new("snapshot");
    // Each agent prints its 10,000 lines on its first run only: a restored agent resumes
    // rather than redoing its work, so what the restore measures is the replayed history
    // (and not the command printing 10,000 more lines behind it).
    let mut yaml =
        String::from("session: bench\nsnapshot: { scrollback_lines: 20000, keep: 100 }\nagents:\n");
    for i in 0..9 {
        yaml.push_str(&format!(
            "  - {{ name: a{i}, role: WORKER, command: 'test -e printed-a{i} || {{ seq 1 10000 | sed \"s/^/agent a{i} line /\"; : > printed-a{i}; }}; echo done; while read r n; do seq 1 $n | sed \"s/^/agent a{i} round $r line /\"; echo round-$r; done' }}
"
        ));
    }
    std::fs::write(server.dir.path().join("orch.yaml"), yaml).expect("layout");
    server.orch(&["layout", "up"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let panes = server.tmux(&["list-panes", "-s", "-t", "=bench", "-F", "#{pane_id}"]);
        let ids: Vec<&str> = panes.lines().filter(|l| l.starts_with('%')).collect();
        let done = ids.len() >= 9
            && ids.iter().all(|id| {
                server
                    .tmux(&["capture-pane", "-p", "-t", id])
                    .contains("done")
            });
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "panes never finished printing");
        std::thread::sleep(Duration::from_millis(100));
    }
    let snapshots = server.dir.path().join("state/bench/snapshots");
    let (mut cold_wall, mut cold_orch) = (Vec::new(), Vec::new());
    let mut bytes = String::new();
    for _ in 0..RUNS {
        let _ = std::fs::remove_dir_all(&snapshots);
        let (wall, out) = server.orch(&["snapshot"]);
        cold_wall.push(wall);
        cold_orch.push(reported(&out));
        bytes = out.lines().next().unwrap_or_default().to_owned();
    }
    let (mut warm_wall, mut warm_orch) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let (wall, out) = server.orch(&["snapshot"]);
        warm_wall.push(wall);
        warm_orch.push(reported(&out));
    }
    println!("orch snapshot, 9 panes x 10,000 lines, median of {RUNS}:");
    println!("  {bytes}");
    println!(
        "  empty store: wall {}, capture+store {}",
        ms(median(cold_wall)),
        ms(median(cold_orch))
    );
    println!(
        "  idle session, blobs already stored: wall {}, capture+store {}",
        ms(median(warm_wall)),
        ms(median(warm_orch))
    );

    // A working session: every pane printed 100 more lines since the previous snapshot,
    // which then reads only those rows (and the screens).
    let ids: Vec<String> = server
        .tmux(&["list-panes", "-s", "-t", "=bench", "-F", "#{pane_id}"])
        .lines()
        .filter(|l| l.starts_with('%'))
        .map(str::to_owned)
        .collect();
    let (mut busy_wall, mut busy_orch) = (Vec::new(), Vec::new());
    for round in 0..RUNS {
        let mut keys: Vec<String> = Vec::new();
        for id in &ids {
            keys.extend(["send-keys", "-t", id, "-l", &format!("{round} 100")].map(String::from));
            keys.push(";".into());
            keys.extend(["send-keys", "-t", id, "Enter", ";"].map(String::from));
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        server.tmux(&keys);
        let marker = format!("round-{round}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ids.iter().all(|id| {
            server
                .tmux(&["capture-pane", "-p", "-t", id])
                .lines()
                .any(|l| l.trim_end() == marker)
        }) {
            assert!(Instant::now() < deadline, "round {round} never printed");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (wall, out) = server.orch(&["snapshot"]);
        busy_wall.push(wall);
        busy_orch.push(reported(&out));
    }
    println!(
        "  working session, 100 new lines per pane since the previous snapshot: wall {}, capture+store {}",
        ms(median(busy_wall)),
        ms(median(busy_orch))
    );

    // What tmux-resurrect does for pane contents, on the same session: one
    // `tmux capture-pane -epJ -S -` process per pane into a file (its save runs more
    // tmux commands besides, so this is a lower bound of its time).
    let out_dir = server.dir.path().join("resurrect-style");
    std::fs::create_dir_all(&out_dir).expect("dir");
    let mut baseline = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        for id in &ids {
            let file =
                std::fs::File::create(out_dir.join(id.trim_start_matches('%'))).expect("file");
            let status = std::process::Command::new("tmux")
                .args([
                    "-L",
                    &server.socket,
                    "capture-pane",
                    "-epJ",
                    "-S",
                    "-",
                    "-t",
                    id,
                ])
                .stdout(file)
                .status()
                .expect("tmux");
            assert!(status.success());
        }
        baseline.push(start.elapsed());
    }
    println!(
        "  tmux-resurrect-style content capture (9 tmux processes), median of {RUNS}: {}",
        ms(median(baseline))
    );

    // Size growth of an idle session: 1 snapshot, then 49 more.
    let _ = std::fs::remove_dir_all(&snapshots);
    server.orch(&["snapshot"]);
    let one = dir_size(&snapshots);
    for _ in 0..49 {
        server.orch(&["snapshot"]);
    }
    let fifty = dir_size(&snapshots);
    println!(
        "  idle session on disk: 1 snapshot {} KiB, 50 snapshots {} KiB ({:.2}x)",
        one / 1024,
        fifty / 1024,
        fifty as f64 / one as f64
    );

    // Restore after the tmux server died, until every pane runs with its history shown:
    // "done" is the replay's last line, and the restored agent prints only another "done".
    let mut restores = Vec::new();
    let mut reported_restores = Vec::new();
    for _ in 0..5 {
        server.tmux(&["kill-server"]);
        let start = Instant::now();
        let (_, out) = server.orch(&["restore", "latest", "--no-handover"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // ONE tmux process a round for all panes: `#{C:done}` is the line of the
            // visible screen showing "done" (0 when none), so the poll itself barely
            // loads the server it measures.
            let panes = server.tmux(&[
                "list-panes",
                "-s",
                "-t",
                "=bench",
                "-F",
                "#{pane_dead} #{C:done}",
            ]);
            let shown = panes
                .lines()
                .filter(|l| l.starts_with("0 ") && !l.ends_with(" 0"))
                .count();
            if shown == 9 {
                break;
            }
            assert!(Instant::now() < deadline, "restore never finished");
            std::thread::sleep(Duration::from_millis(5));
        }
        restores.push(start.elapsed());
        let reported = out
            .lines()
            .find(|l| l.starts_with("session "))
            .and_then(|l| l.rsplit(" in ").next())
            .and_then(|t| t.trim().trim_end_matches(" ms").parse::<u64>().ok())
            .unwrap_or(0);
        reported_restores.push(Duration::from_millis(reported));
    }
    println!(
        "  restore after kill-server, 9 x 10,000 lines, median of 5: all panes running with their history shown {}, orch's own report {}",
        ms(median(restores)),
        ms(median(reported_restores))
    );
}

fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            total += dir_size(&path);
        } else if let Ok(m) = entry.metadata() {
            total += m.len();
        }
    }
    total
}
