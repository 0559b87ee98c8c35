//! `cargo bench --bench status`: how long `orch status --json` takes and how many tmux
//! processes it starts, for 9, 50 and 200 agents on a private tmux server; plus `layout up`
//! and `layout down` for 9 agents. Prints medians over repeated runs.

mod support;

use std::time::Duration;

use support::{Server, counting_path, median, ms};

const RUNS: usize = 31;

fn layout(agents: usize) -> String {
    let mut yaml = String::from("session: bench\nagents:\n");
    for i in 0..agents {
        yaml.push_str(&format!(
            "  - {{ name: a{i}, role: WORKER, command: 'exec sleep 3600' }}\n"
        ));
    }
    yaml
}

fn main() {
    println!("orch status --json, median of {RUNS} runs (release build, private tmux server)");
    for agents in [9, 50, 200] {
        let s = Server::new(&agents.to_string());
        std::fs::write(s.dir.path().join("orch.yaml"), layout(agents)).expect("write");
        let up = s.orch(&["layout", "up"]).0;
        let times: Vec<Duration> = (0..RUNS).map(|_| s.orch(&["status", "--json"]).0).collect();
        let bin = tempfile::tempdir().expect("dir");
        let (path, log) = counting_path(bin.path());
        s.orch_with(&["status", "--json"], &[("PATH", path.as_str())]);
        let calls = std::fs::read_to_string(&log)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        println!(
            "  {agents:>3} agents: status {} (min {}), tmux processes per status: {calls}; layout up: {}",
            ms(median(times.clone())),
            ms(times.iter().min().copied().unwrap_or_default()),
            ms(up)
        );
    }

    let mut ups = Vec::new();
    let mut downs = Vec::new();
    for i in 0..5 {
        let s = Server::new(&format!("updown{i}"));
        std::fs::write(s.dir.path().join("orch.yaml"), layout(9)).expect("write");
        ups.push(s.orch(&["layout", "up"]).0);
        downs.push(s.orch(&["layout", "down", "--no-snapshot"]).0);
    }
    println!(
        "layout up, 9 agents, new server: median {} over 5",
        ms(median(ups))
    );
    println!(
        "layout down, 9 agents (SIGTERM, all exit at once): median {} over 5",
        ms(median(downs))
    );
}
