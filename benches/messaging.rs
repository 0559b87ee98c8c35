//! `cargo bench --bench messaging`: confirmed delivery latency of `orch send` to one agent
//! and to all 9, on a private tmux server, and the throughput of the persistent queue.

mod support;

use std::time::{Duration, Instant};

use orch::messaging::queue::{Priority, Queue};
use support::{Server, median, ms};

const RUNS: usize = 20;

fn main() {
    let server = Server {
        socket: format!("orch-bench-{}-msg", std::process::id()),
        dir: tempfile::tempdir().expect("dir"),
    };
    let mut yaml = String::from("session: msg\nagents:\n");
    for i in 0..9 {
        let file = server.dir.path().join(format!("a{i}.txt"));
        yaml.push_str(&format!(
            "  - {{ name: a{i}, role: WORKER, command: \"stty -echo -icanon && exec tee -a '{}'\" }}\n",
            file.display()
        ));
    }
    std::fs::write(server.dir.path().join("orch.yaml"), yaml).expect("layout");
    server.orch(&["layout", "up"]);
    std::thread::sleep(Duration::from_millis(500));

    let one: Vec<Duration> = (0..RUNS)
        .map(|i| {
            let (took, out) = server.orch(&["send", "a0", &format!("message {i} for one agent")]);
            assert!(out.contains("delivered"), "{out}");
            took
        })
        .collect();
    let all: Vec<Duration> = (0..RUNS / 2)
        .map(|i| {
            let (took, out) = server.orch(&["send", "all", &format!("broadcast {i}")]);
            assert_eq!(out.matches("delivered").count(), 9, "{out}");
            took
        })
        .collect();
    println!("orch send, confirmed on screen then Enter (release build, private tmux server):");
    println!(
        "  one agent: median {} (min {}) over {RUNS}",
        ms(median(one.clone())),
        ms(*one.iter().min().expect("runs"))
    );
    println!(
        "  all 9 agents: median {} (min {}) over {}   target ≤ 500 ms",
        ms(median(all.clone())),
        ms(*all.iter().min().expect("runs")),
        RUNS / 2
    );

    let qdir = tempfile::tempdir().expect("dir");
    let queue = Queue::new(qdir.path());
    let n = 1000;
    let start = Instant::now();
    for i in 0..n {
        let priority = [Priority::High, Priority::Normal, Priority::Low][i % 3];
        queue
            .push("user", "w", priority, &format!("queued message {i}"))
            .expect("push");
    }
    let pushed = start.elapsed();
    let start = Instant::now();
    let pending = queue.pending("w").expect("pending");
    let listed = start.elapsed();
    assert_eq!(pending.len(), n);
    let start = Instant::now();
    for m in &pending {
        queue.remove(m).expect("remove");
    }
    let removed = start.elapsed();
    println!(
        "  queue: {n} pushes {} ({:.0}/s, each atomic and fsynced), listing {n} in order {}, {n} removals {}",
        ms(pushed),
        n as f64 / pushed.as_secs_f64(),
        ms(listed),
        ms(removed)
    );
}
