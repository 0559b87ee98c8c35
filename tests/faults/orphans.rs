//! Break 10: kill -9 of a supervisor while agents print left its `tmux -C` client behind
//! (4 times in 20), after which the server did not exit on `kill-server`; and once in 15
//! a supervisor started right after a kill -9 was refused, naming the dead pid.

use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::support::{Supervisor, TestEnv, poll};

const LAYOUT: &str = "session: o\nagents:\n  - { name: a0, role: WORKER, command: 'yes' }\n  - { name: a1, role: WORKER, command: 'while :; do echo tick $RANDOM; done' }\n";

fn control_clients(env: &TestEnv) -> usize {
    env.tmux(&["list-clients", "-F", "#{client_control_mode}"])
        .lines()
        .filter(|l| l.trim() == "1")
        .count()
}

#[test]
fn twenty_kill_9s_while_agents_print_leave_no_client_and_no_stale_lock() {
    let env = TestEnv::new();
    env.write("orch.yaml", LAYOUT);
    let mut sup = Supervisor::start(&env);
    for round in 0..20 {
        sup.expect("supervisor_started", None, Duration::from_secs(10));
        // Attached (the control client comes up before the start-up snapshot).
        sup.expect("snapshot_written", None, Duration::from_secs(15));
        assert_eq!(
            control_clients(&env),
            1,
            "round {round}: one client while it runs"
        );
        std::thread::sleep(Duration::from_millis(50 + (round * 37) % 300));
        sup.signal(Signal::KILL);
        if round % 2 == 0 {
            // Its client goes with it, without any new supervisor's help.
            let _ = sup.child.wait();
            let gone = poll(Duration::from_secs(2), || {
                (control_clients(&env) == 0).then_some(())
            });
            assert!(
                gone.is_some(),
                "round {round}: the killed supervisor's client stayed"
            );
        }
        // The next one starts at once, in odd rounds before the killed one is even
        // reaped: the dead one's lock is not held against it.
        let next = Supervisor::start(&env);
        drop(std::mem::replace(&mut sup, next));
    }
    sup.expect("supervisor_started", None, Duration::from_secs(10));
    sup.expect("snapshot_written", None, Duration::from_secs(15));
    assert_eq!(control_clients(&env), 1);
    sup.signal(Signal::KILL);
    let _ = sup.child.wait();
    let gone = poll(Duration::from_secs(2), || {
        (control_clients(&env) == 0).then_some(())
    });
    assert!(gone.is_some(), "the last client stayed");
    // The server exits on kill-server: nothing holds it.
    let server: u32 = env
        .tmux(&["display-message", "-p", "#{pid}"])
        .trim()
        .parse()
        .expect("server pid");
    env.kill_server();
    let t0 = Instant::now();
    let exited = poll(Duration::from_secs(5), || {
        (!super::support::alive(server)).then_some(())
    });
    assert!(
        exited.is_some(),
        "the tmux server did not exit within {:?}",
        t0.elapsed()
    );
}
