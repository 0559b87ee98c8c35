//! Break 6: a 1.5 GB request line cost 1.5 GB of memory; 24,000 idle connections used up
//! the supervisor's descriptors, after which a dead agent was never restarted, the
//! listener was gone for good and `orch status` said "supervisor not running".

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::session_dir;
use super::support::{Supervisor, TestEnv};

const LAYOUT: &str = "session: c\ndefaults:\n  restart: { policy: always, backoff: { initial: 1ms, max: 1ms } }\nagents:\n  - { name: a0, role: WORKER, command: 'exec sleep 600' }\n";

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn a_flood_of_idle_connections_and_a_huge_line_cost_the_supervisor_nothing() {
    let env = TestEnv::new();
    env.write("orch.yaml", LAYOUT);
    let mut sup = Supervisor::start(&env);
    let started = sup.expect("agent_started", Some("a0"), Duration::from_secs(10));
    sup.expect("snapshot_written", None, Duration::from_secs(10));
    let pid = sup.child.id();
    let socket = session_dir(&env, "c").join("control.sock");

    // A request line far over the limit: refused, and memory stays where it was.
    let before = rss_kib(pid);
    let big = UnixStream::connect(&socket).expect("connect");
    let writer = {
        let mut big = big.try_clone().expect("clone");
        std::thread::spawn(move || {
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..100 {
                if big.write_all(&chunk).is_err() {
                    break; // the supervisor stopped reading: as it should
                }
            }
        })
    };
    big.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut reply = String::new();
    BufReader::new(&big).read_line(&mut reply).expect("reply");
    assert!(reply.contains("longer than"), "{reply}");
    let _ = big.shutdown(std::net::Shutdown::Both);
    writer.join().expect("writer");
    let grew = rss_kib(pid).saturating_sub(before);
    assert!(
        grew < 16 * 1024,
        "the supervisor's memory grew {grew} KiB on a 100 MiB line"
    );

    // Thousands of idle connections.
    let mut idle = Vec::new();
    for _ in 0..5000 {
        match UnixStream::connect(&socket) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connecting: {e}"),
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        open_fds(pid) < 1000,
        "idle connections hold {} of the supervisor's descriptors",
        open_fds(pid)
    );
    // A death is still noticed and the agent restarted, and status tells the truth.
    let agent = started["pid"].as_u64().expect("pid") as i32;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(agent).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill");
    sup.expect("agent_exited", Some("a0"), Duration::from_secs(10));
    sup.expect("agent_restarted", Some("a0"), Duration::from_secs(10));
    let t0 = Instant::now();
    let status = env.orch(&["status"]);
    let out = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        out.contains(&format!("supervisor running (pid {pid})")),
        "{out}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "status took {:?}",
        t0.elapsed()
    );

    // The idle ones are dropped after the idle timeout; the listener still serves.
    std::thread::sleep(Duration::from_secs(6));
    drop(idle);
    let status = env.orch_ok(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(v["supervisor"]["running"], true);
    assert_eq!(v["agents"][0]["restarts"], 1, "{v}");
    assert!(sup.child.try_wait().expect("wait").is_none());
}
