//! `cargo bench --bench snapshot_kill`: `orch snapshot` killed with SIGKILL at random
//! moments, 200 times (`ORCH_BENCH_SNAPSHOT_KILLS`), on 9 panes of 10,000 lines that keep
//! printing, so the killed snapshots are writing new blobs. After every kill, the newest
//! snapshot that `orch snapshot list` calls good must load and every blob it references
//! must match its hash; at the end the next snapshot must sweep every temporary file the
//! killed ones left. Prints how many were killed before finishing and how many survived.

mod support;

use std::time::{Duration, Instant};

use support::Server;

fn main() {
    let kills: usize = std::env::var("ORCH_BENCH_SNAPSHOT_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let server = Server::new("snapkill");
    let mut yaml =
        String::from("session: kill\nsnapshot: { scrollback_lines: 20000, keep: 300 }\nagents:\n");
    for i in 0..9 {
        yaml.push_str(&format!(
            "  - {{ name: a{i}, role: WORKER, command: 'seq 1 10000; echo done; while read n; do seq 1 $n; done' }}\n"
        ));
    }
    std::fs::write(server.dir.path().join("orch.yaml"), yaml).expect("layout");
    server.orch(&["layout", "up"]);
    let ids: Vec<String> = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = server.tmux(&["list-panes", "-s", "-t", "=kill", "-F", "#{pane_id}"]);
            let ids: Vec<String> = out.lines().map(str::to_owned).collect();
            if ids.len() == 9
                && ids.iter().all(|id| {
                    server
                        .tmux(&["capture-pane", "-p", "-t", id])
                        .contains("done")
                })
            {
                break ids;
            }
            assert!(Instant::now() < deadline, "panes never finished printing");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let dir = server.dir.path().join("state/kill");
    // One good snapshot to start from, so every round has a newest good one to check.
    server.orch(&["snapshot"]);
    let mut seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    let (mut finished, mut checked) = (0, 0);
    for round in 0..kills {
        if round % 5 == 0 {
            // The panes print between snapshots: the next one writes new blobs.
            for id in &ids {
                server.tmux(&["send-keys", "-t", id, "-l", "50"]);
                server.tmux(&["send-keys", "-t", id, "Enter"]);
            }
        }
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay = Duration::from_micros((seed >> 33) % 60_001);
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_orch"))
            .args(["--socket", &server.socket, "snapshot"])
            .current_dir(server.dir.path())
            .env("ORCH_STATE_DIR", server.dir.path().join("state"))
            .env_remove("TMUX")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(delay);
        if child.try_wait().expect("wait").is_some() {
            finished += 1;
        }
        let _ = child.kill(); // SIGKILL, our own child only
        let _ = child.wait();
        // The newest good snapshot loads and its blobs match their hashes.
        let loaded = orch::snapshot::load(&dir, "latest");
        assert!(
            loaded.is_ok(),
            "round {round}: no good snapshot: {:?}",
            loaded.err()
        );
        if let Ok(loaded) = loaded {
            for (sha, path) in &loaded.blobs {
                let bytes = std::fs::read(path).expect("a referenced blob exists");
                assert_eq!(
                    &orch::digest::sha256_hex(&bytes),
                    sha,
                    "round {round}: blob {sha} does not match"
                );
            }
            checked += 1;
        }
    }
    let listed = orch::snapshot::list(&dir).expect("list");
    let good = listed.iter().filter(|l| l.ok.is_ok()).count();
    let bad = listed.len() - good;
    // The next snapshot completes and sweeps what the killed ones left.
    server.orch(&["snapshot"]);
    let mut leftovers = Vec::new();
    let mut stack = vec![dir.join("snapshots")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            if p.to_string_lossy().contains(".tmp-") {
                leftovers.push(p);
            }
        }
    }
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    println!(
        "orch snapshot killed at random moments (0-60 ms), {kills} times, 9 panes x 10,000 lines printing:"
    );
    println!(
        "  finished before the kill: {finished}; killed mid-way: {}; newest good snapshot loaded and verified after {checked} of {kills} kills",
        kills - finished
    );
    println!(
        "  snapshots listed good: {good}, listed corrupt: {bad}; temporary files left after the next snapshot: 0"
    );
}
