//! orch's tmux control-mode client against a real, private tmux server.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use orch::tmux::control::{ControlClient, ControlError, ControlEvent};
use support::{TestEnv, wait_for};
use tokio::sync::mpsc::Receiver;

const SESSION: &str = "ctl";

/// Starts a 200x50 session whose pane waits for `go` to exist, then prints
/// `hello <unix nanos>` (the time just before printing) and sleeps. Waiting on a file
/// instead of a fixed sleep keeps the print after the attach on a loaded machine.
fn session_printing_hello(env: &TestEnv) -> std::path::PathBuf {
    let go = env.path().join("go");
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.02; done; printf 'hello %s\\n' \"$(date +%s%N)\"; sleep 600",
        go.display()
    );
    env.tmux(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        SESSION,
        "-x",
        "200",
        "-y",
        "50",
        "sh",
        "-c",
        &script,
    ]);
    assert!(env.session_exists(SESSION), "test session was not created");
    go
}

fn window_sizes(env: &TestEnv) -> String {
    env.tmux(&[
        "list-windows",
        "-t",
        &format!("={SESSION}"),
        "-F",
        "#{window_width}x#{window_height}",
    ])
}

fn server_pid(env: &TestEnv) -> u32 {
    env.tmux(&["display-message", "-p", "#{pid}"])
        .trim()
        .parse()
        .expect("server pid")
}

/// Waits for an Output event containing `needle`; returns the event time and the bytes.
async fn wait_output(rx: &mut Receiver<ControlEvent>, needle: &[u8]) -> (Instant, Vec<u8>) {
    let found = tokio::time::timeout(Duration::from_secs(2), async {
        let mut seen = Vec::new();
        while let Some(event) = rx.recv().await {
            if let ControlEvent::Output { at, bytes, .. } = &event
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                return (*at, bytes.clone());
            }
            seen.push(event);
        }
        panic!("event stream ended before the output; saw {seen:?}");
    })
    .await;
    found.expect("output event within 2 s")
}

async fn wait_exit(rx: &mut Receiver<ControlEvent>, within: Duration) -> Option<String> {
    tokio::time::timeout(within, async {
        while let Some(event) = rx.recv().await {
            if let ControlEvent::Exit { reason } = event {
                return reason;
            }
        }
        panic!("event stream ended without an Exit event");
    })
    .await
    .expect("exit event in time")
}

#[tokio::test]
async fn output_arrives_and_server_death_is_seen() {
    let env = TestEnv::new();
    let go = session_printing_hello(&env);
    let before = window_sizes(&env);
    assert_eq!(before.trim(), "200x50");

    let (client, mut rx) = ControlClient::start(Some(&env.socket), SESSION)
        .await
        .expect("control client starts");
    std::fs::write(&go, "").expect("go file");
    let (at, bytes) = wait_output(&mut rx, b"hello").await;

    // The pane stamped the time just before printing: a rough latency figure.
    let event_wall = SystemTime::now() - at.elapsed();
    let printed_ns = String::from_utf8_lossy(&bytes)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u128>().ok());
    if let (Some(printed), Ok(seen)) = (printed_ns, event_wall.duration_since(UNIX_EPOCH)) {
        let latency_us = seen.as_nanos().saturating_sub(printed) / 1000;
        println!("printf -> Output event: {latency_us} us");
    }

    assert_eq!(
        window_sizes(&env),
        before,
        "the control client resized the session's windows"
    );
    assert_eq!(client.lost_outputs(), 0);

    env.kill_server();
    let t0 = Instant::now();
    let reason = wait_exit(&mut rx, Duration::from_secs(1)).await;
    println!(
        "kill-server -> Exit event: {} us (reason {reason:?})",
        t0.elapsed().as_micros()
    );
    drop(client);
}

#[tokio::test]
async fn server_killed_by_signal_gives_exit_with_reason() {
    let env = TestEnv::new();
    session_printing_hello(&env);
    let pid = server_pid(&env);
    let (_client, mut rx) = ControlClient::start(Some(&env.socket), SESSION)
        .await
        .expect("control client starts");

    // Only this test's own server, by its pid: a crash rather than an orderly kill-server.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill server");
    let t0 = Instant::now();
    let reason = wait_exit(&mut rx, Duration::from_secs(1)).await;
    println!(
        "SIGKILL server -> Exit event: {} us (reason {reason:?})",
        t0.elapsed().as_micros()
    );
    assert_eq!(reason.as_deref(), Some("server exited unexpectedly"));
    wait_for("server gone", Duration::from_secs(2), || {
        (!support::alive(pid)).then_some(())
    });
}

#[tokio::test]
async fn detach_ends_the_stream_and_leaves_the_session() {
    let env = TestEnv::new();
    session_printing_hello(&env);
    let (client, mut rx) = ControlClient::start(Some(&env.socket), SESSION)
        .await
        .expect("control client starts");
    let tmux_client = client.pid().expect("client pid");
    client.detach().await;
    assert_eq!(wait_exit(&mut rx, Duration::from_secs(1)).await, None);
    assert!(!support::alive(tmux_client));
    assert!(env.session_exists(SESSION));
    assert_eq!(env.tmux(&["list-clients"]).trim(), "");
}

#[tokio::test]
async fn dropping_the_client_kills_only_the_client() {
    let env = TestEnv::new();
    session_printing_hello(&env);
    let server = server_pid(&env);
    let (client, _rx) = ControlClient::start(Some(&env.socket), SESSION)
        .await
        .expect("control client starts");
    let tmux_client = client.pid().expect("client pid");
    drop(client);
    wait_for("tmux client gone", Duration::from_secs(2), || {
        (!support::alive(tmux_client)).then_some(())
    });
    assert!(support::alive(server));
    assert!(env.session_exists(SESSION));
}

#[tokio::test]
async fn missing_session_or_server_is_an_error() {
    let env = TestEnv::new();
    let err = ControlClient::start(Some(&env.socket), SESSION)
        .await
        .err()
        .expect("no server: error");
    assert!(matches!(err, ControlError::Closed { .. }), "{err}");
    // -N: the attempt must not have started a server on the socket.
    assert!(!env.session_exists(SESSION));
    assert_eq!(env.tmux(&["list-sessions"]), "");

    session_printing_hello(&env);
    let err = ControlClient::start(Some(&env.socket), "nope")
        .await
        .err()
        .expect("no session: error");
    match err {
        ControlError::Attach { message, .. } => assert!(message.contains("nope"), "{message}"),
        other => panic!("expected Attach, got {other}"),
    }
}

/// A consumer that stops reading during an output flood: tmux must not drop the client
/// (`%exit too far behind`), what was dropped is reported with its last time, and output
/// after the consumer caught up arrives as usual.
#[tokio::test]
async fn flood_with_a_stalled_consumer_keeps_the_client() {
    let env = TestEnv::new();
    let go = session_printing_hello(&env);
    let (client, mut rx) = ControlClient::start(Some(&env.socket), SESSION)
        .await
        .expect("control client starts");
    let done = env.path().join("flood-done");
    env.tmux(&[
        "new-window",
        "-d",
        "-t",
        &format!("={SESSION}"),
        &format!("seq 1 300000; touch '{}'; sleep 600", done.display()),
    ]);
    // Not reading events while the flood goes on; the runtime still runs the reader, so
    // no blocking sleep here.
    let flood_start = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), async {
        while !done.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("flood done within 20 s");
    let flood_time = flood_start.elapsed();

    // Catch up until the stream is quiet.
    let mut outputs = 0usize;
    let mut lost_events = 0usize;
    let mut last_flood: Option<Instant> = None;
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        match event {
            ControlEvent::Output { at, .. } => {
                outputs += 1;
                last_flood = Some(at);
            }
            ControlEvent::OutputLost { at, .. } => {
                lost_events += 1;
                last_flood = last_flood.max(Some(at));
            }
            ControlEvent::Exit { reason } => panic!("client dropped: {reason:?}"),
            _ => {}
        }
    }
    println!(
        "flood of {flood_time:?}: {outputs} output events delivered, {} dropped, \
         reported in {lost_events} OutputLost",
        client.lost_outputs()
    );
    assert!(
        last_flood.is_some_and(|t| t >= flood_start),
        "the flood's output times were lost"
    );
    if client.lost_outputs() > 0 {
        assert!(lost_events > 0, "drops were not reported");
    }

    std::fs::write(&go, "").expect("go file");
    let (at, _) = wait_output(&mut rx, b"hello").await;
    assert!(last_flood.is_some_and(|t| t <= at));
}
