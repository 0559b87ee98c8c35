//! The supervisor's policies against a fake clock.

use std::time::{Duration, Instant};

use super::*;
use crate::monitor::activity::{Activity, Source};

fn layout(yaml_agent: &str, monitor: &str) -> crate::layout::Layout {
    let text = format!("session: s\n{monitor}agents:\n  - {yaml_agent}\n");
    crate::layout::parse(&text, "t.yaml", &std::env::temp_dir()).unwrap_or_else(|e| panic!("{e}"))
}

/// A core with one agent `a`, already running as pid 100 in pane %1 since `t0`.
fn running(yaml_agent: &str, t0: Instant) -> Core {
    running_with(yaml_agent, "", t0)
}

fn running_with(yaml_agent: &str, monitor: &str, t0: Instant) -> Core {
    let l = layout(yaml_agent, monitor);
    let mut core = Core::new(l.agents, &l.monitor);
    core.step(
        Msg::Started {
            agent: "a".into(),
            pane: "%1".into(),
            pid: 100,
            adopted: false,
            age: None,
        },
        t0,
    );
    core
}

fn crash(core: &mut Core, pid: u32, at: Instant) -> Vec<Effect> {
    core.step(
        Msg::Exited {
            agent: "a".into(),
            pid: Some(pid),
            status: Some(1),
            signal: None,
            screen: None,
        },
        at,
    )
}

fn kinds(fx: &[Effect]) -> Vec<EventKind> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Emit(ev) => Some(ev.kind),
            _ => None,
        })
        .collect()
}

fn respawns(fx: &[Effect]) -> usize {
    fx.iter()
        .filter(|e| matches!(e, Effect::Respawn { .. }))
        .count()
}

fn armed_restart(fx: &[Effect]) -> Option<(Duration, Timer)> {
    fx.iter().find_map(|e| match e {
        Effect::Arm {
            timer: t @ Timer::Restart { .. },
            after,
        } => Some((*after, t.clone())),
        _ => None,
    })
}

const SPEC: &str = "{ name: a, role: WORKER, restart: { max_restarts: 5, window: 60s, min_uptime: 5s, backoff: { initial: 500ms, max: 4s } } }";

#[test]
fn backoff_doubles_from_initial_up_to_max_after_an_immediate_first_restart() {
    let t0 = Instant::now();
    let mut core = running(SPEC, t0);
    let mut now = t0 + Duration::from_secs(10); // a stable run first
    let mut delays = Vec::new();
    for pid in 100..105 {
        let fx = crash(&mut core, pid, now);
        match armed_restart(&fx) {
            None => {
                assert_eq!(respawns(&fx), 1, "{fx:?}");
                delays.push(Duration::ZERO);
            }
            Some((after, timer)) => {
                assert_eq!(core.agent("a").map(|a| a.state), Some(ProcState::Backoff));
                assert!(kinds(&fx).contains(&EventKind::AgentBackoff));
                delays.push(after);
                now += after;
                let fx = core.step(Msg::Timer(timer), now);
                assert_eq!(respawns(&fx), 1);
            }
        }
        let fx = core.step(
            Msg::Started {
                agent: "a".into(),
                pane: "%1".into(),
                pid: pid + 1,
                adopted: false,
                age: None,
            },
            now,
        );
        assert_eq!(kinds(&fx), [EventKind::AgentRestarted]);
        now += Duration::from_millis(100); // crashes again quickly (the next pid is pid + 1)
    }
    let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [0, 500, 1000, 2000, 4000]);
}

#[test]
fn fatal_after_exactly_max_restarts_in_the_window_and_nothing_after() {
    let t0 = Instant::now();
    let mut core = running(SPEC, t0);
    let mut now = t0;
    let mut pid = 100;
    let mut restarts = 0;
    loop {
        now += Duration::from_millis(100);
        let fx = crash(&mut core, pid, now);
        if kinds(&fx).contains(&EventKind::AgentFatal) {
            assert!(kinds(&fx).contains(&EventKind::Escalated));
            assert_eq!(respawns(&fx), 0);
            assert!(armed_restart(&fx).is_none());
            break;
        }
        if let Some((after, timer)) = armed_restart(&fx) {
            now += after;
            core.step(Msg::Timer(timer), now);
        }
        restarts += 1;
        pid += 1;
        core.step(
            Msg::Started {
                agent: "a".into(),
                pane: "%1".into(),
                pid,
                adopted: false,
                age: None,
            },
            now,
        );
        assert!(restarts <= 5, "no restart storm");
    }
    assert_eq!(restarts, 5);
    assert_eq!(core.agent("a").map(|a| a.state), Some(ProcState::Fatal));
    // Nothing brings it back by itself: timers, ticks, more exit reports.
    now += Duration::from_secs(3600);
    assert!(core.step(Msg::Tick, now).is_empty());
    assert!(crash(&mut core, pid, now).is_empty());
    // A human can.
    let fx = core.step(Msg::Command(Command::Start("a".into())), now);
    assert_eq!(respawns(&fx), 1);
    assert_eq!(core.agent("a").map(|a| a.recent.len()), Some(0));
}

#[test]
fn restarts_spread_wider_than_the_window_never_turn_fatal() {
    let t0 = Instant::now();
    let mut core = running(SPEC, t0);
    let mut now = t0;
    for pid in 100..120 {
        now += Duration::from_secs(20); // 3 per minute, each run longer than min_uptime
        let fx = crash(&mut core, pid, now);
        assert!(!kinds(&fx).contains(&EventKind::AgentFatal), "crash {pid}");
        assert_eq!(respawns(&fx), 1, "stable runs restart at once");
        core.step(
            Msg::Started {
                agent: "a".into(),
                pane: "%1".into(),
                pid: pid + 1,
                adopted: false,
                age: None,
            },
            now,
        );
    }
}

#[test]
fn min_uptime_resets_the_backoff() {
    let t0 = Instant::now();
    let mut core = running(SPEC, t0);
    let now = t0 + Duration::from_secs(10);
    assert_eq!(respawns(&crash(&mut core, 100, now)), 1);
    core.step(
        Msg::Started {
            agent: "a".into(),
            pane: "%1".into(),
            pid: 101,
            adopted: false,
            age: None,
        },
        now,
    );
    let (after, _) =
        armed_restart(&crash(&mut core, 101, now + Duration::from_secs(1))).expect("backoff");
    assert_eq!(after, Duration::from_millis(500));
    // The next run lasts: the Stable timer fires and the sequence starts over.
    let t = now + Duration::from_secs(2);
    let fx = core.step(
        Msg::Timer(Timer::Restart {
            agent: "a".into(),
            generation: 1,
        }),
        t,
    );
    let _ = fx;
    let gen_before = core.agent("a").map(|a| a.consecutive);
    assert_eq!(gen_before, Some(2));
    let fx = core.step(
        Msg::Started {
            agent: "a".into(),
            pane: "%1".into(),
            pid: 102,
            adopted: false,
            age: None,
        },
        t,
    );
    let stable = fx
        .iter()
        .find_map(|e| match e {
            Effect::Arm {
                timer: t @ Timer::Stable { .. },
                after,
            } => Some((t.clone(), *after)),
            _ => None,
        })
        .expect("stable timer");
    assert_eq!(stable.1, Duration::from_secs(5));
    assert_eq!(
        core.step(Msg::Timer(stable.0), t + Duration::from_secs(5)),
        [Effect::Persist]
    );
    assert_eq!(core.agent("a").map(|a| a.consecutive), Some(0));
    assert_eq!(
        respawns(&crash(&mut core, 102, t + Duration::from_secs(6))),
        1,
        "immediate again"
    );
}

#[test]
fn policies_on_failure_always_never() {
    let t0 = Instant::now();
    let clean = |core: &mut Core| {
        core.step(
            Msg::Exited {
                agent: "a".into(),
                pid: Some(100),
                status: Some(0),
                signal: None,
                screen: None,
            },
            t0 + Duration::from_secs(9),
        )
    };
    let mut c = running(
        "{ name: a, role: WORKER, restart: { policy: on-failure } }",
        t0,
    );
    assert_eq!(respawns(&clean(&mut c)), 0);
    assert_eq!(c.agent("a").map(|a| a.state), Some(ProcState::Exited));
    let mut c = running("{ name: a, role: WORKER, restart: { policy: always } }", t0);
    assert_eq!(respawns(&clean(&mut c)), 1);
    let mut c = running("{ name: a, role: WORKER, restart: { policy: never } }", t0);
    assert_eq!(respawns(&crash(&mut c, 100, t0)), 0);
    // A signal is a failure.
    let mut c = running(
        "{ name: a, role: WORKER, restart: { policy: on-failure } }",
        t0,
    );
    let fx = c.step(
        Msg::Exited {
            agent: "a".into(),
            pid: Some(100),
            status: None,
            signal: Some(9),
            screen: Some("bye".into()),
        },
        t0,
    );
    assert_eq!(respawns(&fx), 1);
    let Some(Effect::Emit(ev)) = fx.first() else {
        panic!("{fx:?}")
    };
    assert_eq!(ev.kind, EventKind::AgentExited);
    assert_eq!(ev.fields.get("exit_status"), Some(&serde_json::json!(137)));
    assert_eq!(
        ev.fields.get("last_screen"),
        Some(&serde_json::json!("bye"))
    );
}

#[test]
fn one_death_reported_three_times_is_handled_once() {
    let t0 = Instant::now();
    let mut core = running(SPEC, t0);
    let t = t0 + Duration::from_secs(10);
    assert_eq!(respawns(&crash(&mut core, 100, t)), 1);
    assert!(crash(&mut core, 100, t).is_empty(), "hook after pidfd");
    assert!(
        core.step(Msg::PaneMissing { agent: "a".into() }, t)
            .is_empty(),
        "reconciliation while respawning"
    );
    core.step(
        Msg::Started {
            agent: "a".into(),
            pane: "%1".into(),
            pid: 101,
            adopted: false,
            age: None,
        },
        t,
    );
    assert!(
        crash(&mut core, 100, t).is_empty(),
        "a late report about the old pid"
    );
}

#[test]
fn stall_and_recovery() {
    let t0 = Instant::now();
    let mut core = running("{ name: a, role: WORKER, stall_after: 30s }", t0);
    assert!(
        core.step(Msg::Tick, t0 + Duration::from_secs(29))
            .is_empty()
    );
    let fx = core.step(Msg::Tick, t0 + Duration::from_secs(30));
    assert_eq!(kinds(&fx), [EventKind::AgentStalled]);
    assert!(
        core.step(Msg::Tick, t0 + Duration::from_secs(31))
            .is_empty(),
        "reported once"
    );
    let fx = core.step(
        Msg::Output {
            agent: "a".into(),
            bytes: b"hi\n".to_vec(),
        },
        t0 + Duration::from_secs(40),
    );
    assert_eq!(kinds(&fx), [EventKind::AgentRecovered]);
    assert_eq!(core.agent("a").map(|a| a.state), Some(ProcState::Running));
    // Waiting for a human is not a stall.
    core.step(screen("a", Activity::Waiting), t0 + Duration::from_secs(41));
    assert!(
        core.step(Msg::Tick, t0 + Duration::from_secs(500))
            .is_empty()
    );
}

fn screen(agent: &str, activity: Activity) -> Msg {
    Msg::Activity {
        agent: agent.into(),
        activity,
        source: Source::Screen,
        tail: None,
    }
}

fn hook(agent: &str, activity: Activity, event: &str) -> Msg {
    Msg::Activity {
        agent: agent.into(),
        activity,
        source: Source::Hook(event.into()),
        tail: None,
    }
}

#[test]
fn idle_at_the_prompt_is_never_a_stall_and_ends_one() {
    let t0 = Instant::now();
    let mut core = running("{ name: a, role: WORKER, stall_after: 30s }", t0);
    core.step(screen("a", Activity::Idle), t0);
    assert!(
        core.step(Msg::Tick, t0 + Duration::from_secs(600))
            .is_empty()
    );
    // A working agent that falls silent stalls; its prompt coming back ends the stall.
    core.step(
        hook("a", Activity::Working, "UserPromptSubmit"),
        t0 + Duration::from_secs(601),
    );
    let fx = core.step(Msg::Tick, t0 + Duration::from_secs(640));
    assert_eq!(kinds(&fx), [EventKind::AgentStalled]);
    let fx = core.step(
        hook("a", Activity::Idle, "Stop"),
        t0 + Duration::from_secs(641),
    );
    assert_eq!(
        kinds(&fx),
        [EventKind::ActivityChanged, EventKind::AgentRecovered]
    );
}

#[test]
fn activity_changes_are_journaled_with_their_source() {
    let t0 = Instant::now();
    let mut core = running("{ name: a, role: WORKER, profile: claude }", t0);
    let fx = core.step(screen("a", Activity::Idle), t0);
    let Effect::Emit(ev) = &fx[0] else {
        panic!("{fx:?}")
    };
    assert_eq!(ev.kind, EventKind::ActivityChanged);
    assert_eq!(ev.fields["from"], "unknown");
    assert_eq!(ev.fields["to"], "idle");
    assert_eq!(ev.fields["source"], "screen");
    // The same reading again changes nothing.
    assert!(core.step(screen("a", Activity::Idle), t0).is_empty());
    let fx = core.step(
        hook("a", Activity::Working, "UserPromptSubmit"),
        t0 + Duration::from_millis(5),
    );
    let Effect::Emit(ev) = &fx[0] else {
        panic!("{fx:?}")
    };
    assert_eq!(ev.fields["source"], "hook:UserPromptSubmit");
    // The screen keeps showing the idle footer a moment: the hook is newer.
    assert!(
        core.step(screen("a", Activity::Idle), t0 + Duration::from_millis(20))
            .is_empty()
    );
    // A retry whose footer matches nothing: still working.
    assert!(
        core.step(
            screen("a", Activity::Unknown),
            t0 + Duration::from_millis(900)
        )
        .is_empty()
    );
    assert_eq!(core.agent("a").map(|a| a.activity), Some(Activity::Working));
    // Interrupted with Esc (no hook for that): the idle footer is back, and newer; it
    // counts once it has stayed a moment.
    let t3 = t0 + Duration::from_secs(3);
    let fx = core.step(screen("a", Activity::Idle), t3);
    let Some(Effect::Arm { timer, after }) = fx.first().cloned() else {
        panic!("{fx:?}")
    };
    assert_eq!(after, IDLE_SETTLE);
    assert!(kinds(&fx).is_empty(), "{fx:?}");
    let fx = core.step(Msg::Timer(timer), t3 + IDLE_SETTLE);
    assert_eq!(kinds(&fx), [EventKind::ActivityChanged]);
    assert_eq!(core.agent("a").map(|a| a.activity), Some(Activity::Idle));
}

#[test]
fn a_busy_screen_flickering_idle_stays_working() {
    let t0 = Instant::now();
    let mut core = running("{ name: a, role: WORKER, profile: codex }", t0);
    core.step(screen("a", Activity::Working), t0);
    // One frame of the idle footer between two of the spinner.
    let fx = core.step(screen("a", Activity::Idle), t0 + Duration::from_millis(100));
    let Some(Effect::Arm { timer, .. }) = fx.first().cloned() else {
        panic!("{fx:?}")
    };
    assert!(
        core.step(
            screen("a", Activity::Working),
            t0 + Duration::from_millis(200)
        )
        .is_empty()
    );
    assert!(kinds(&core.step(Msg::Timer(timer), t0 + Duration::from_millis(500))).is_empty());
    assert_eq!(core.agent("a").map(|a| a.activity), Some(Activity::Working));
    // The CLI's own signal counts at once.
    let fx = core.step(
        hook("a", Activity::Idle, "agent-turn-complete"),
        t0 + Duration::from_millis(600),
    );
    assert_eq!(kinds(&fx), [EventKind::ActivityChanged]);
}

#[test]
fn a_screen_nothing_recognises_is_reported_once_a_run() {
    let t0 = Instant::now();
    let mut core = running("{ name: a, role: WORKER, profile: codex }", t0);
    core.step(
        Msg::Activity {
            agent: "a".into(),
            activity: Activity::Unknown,
            source: Source::Screen,
            tail: Some("› something new".into()),
        },
        t0 + Duration::from_secs(1),
    );
    assert!(
        core.step(Msg::Tick, t0 + UNRECOGNISED_AFTER - Duration::from_secs(1))
            .is_empty()
    );
    let fx = core.step(Msg::Tick, t0 + UNRECOGNISED_AFTER);
    assert_eq!(kinds(&fx), [EventKind::ActivityUnrecognised]);
    let Effect::Emit(ev) = &fx[0] else {
        panic!("{fx:?}")
    };
    assert_eq!(ev.fields["profile"], "codex");
    assert_eq!(ev.fields["screen_tail"], "› something new");
    assert!(
        core.step(Msg::Tick, t0 + 3 * UNRECOGNISED_AFTER).is_empty(),
        "once"
    );
    // A screen recognised now and then is fine; a shell is never reported.
    let mut core = running("{ name: a, role: WORKER, profile: codex }", t0);
    core.step(screen("a", Activity::Idle), t0 + Duration::from_secs(50));
    core.step(screen("a", Activity::Unknown), t0 + Duration::from_secs(51));
    assert!(
        core.step(Msg::Tick, t0 + Duration::from_secs(100))
            .is_empty()
    );
    let mut core = running("{ name: a, role: WORKER, profile: shell }", t0);
    core.step(screen("a", Activity::Unknown), t0);
    let fx = core.step(Msg::Tick, t0 + 10 * UNRECOGNISED_AFTER);
    assert!(
        !kinds(&fx).contains(&EventKind::ActivityUnrecognised),
        "{fx:?}"
    );
}

#[test]
fn stop_is_final_until_start_and_restart_is_not_a_crash() {
    let t0 = Instant::now();
    let mut core = running("{ name: a, role: WORKER, restart: { policy: always } }", t0);
    let fx = core.step(Msg::Command(Command::Stop("a".into())), t0);
    assert_eq!(
        fx[0],
        Effect::Signal {
            agent: "a".into(),
            kill: false
        }
    );
    let Effect::Arm {
        timer: grace @ Timer::Grace { .. },
        after,
    } = fx[1].clone()
    else {
        panic!("{fx:?}")
    };
    assert_eq!(after, STOP_GRACE);
    // Still alive after the grace period: kill it.
    assert_eq!(
        core.step(Msg::Timer(grace), t0 + STOP_GRACE),
        [Effect::Signal {
            agent: "a".into(),
            kill: true
        }]
    );
    let fx = core.step(
        Msg::Exited {
            agent: "a".into(),
            pid: Some(100),
            status: None,
            signal: Some(15),
            screen: None,
        },
        t0,
    );
    assert_eq!(
        kinds(&fx),
        [EventKind::AgentExited, EventKind::AgentStopped]
    );
    assert_eq!(
        respawns(&fx),
        0,
        "policy always does not override a human's stop"
    );
    let fx = core.step(Msg::Command(Command::Start("a".into())), t0);
    assert_eq!(respawns(&fx), 1);

    let mut core = running(SPEC, t0);
    core.step(Msg::Command(Command::Restart("a".into())), t0);
    let fx = crash(&mut core, 100, t0);
    assert_eq!(respawns(&fx), 1);
    assert_eq!(
        core.agent("a").map(|a| (a.restarts, a.recent.len())),
        Some((0, 0)),
        "not counted as a crash"
    );
}

#[test]
fn an_adopted_agent_counts_its_uptime_from_its_own_start() {
    let t0 = Instant::now() + Duration::from_secs(3600);
    let l = layout(
        "{ name: a, role: WORKER, restart: { min_uptime: 10s } }",
        "",
    );
    let mut core = Core::new(l.agents, &l.monitor);
    let fx = core.step(
        Msg::Started {
            agent: "a".into(),
            pane: "%1".into(),
            pid: 100,
            adopted: true,
            age: Some(Duration::from_secs(7)),
        },
        t0,
    );
    // 7 s of its 10 s min_uptime are behind it already.
    assert!(fx.iter().any(|e| matches!(e, Effect::Arm { timer: Timer::Stable { .. }, after } if *after == Duration::from_secs(3))), "{fx:?}");
    let fx = core.step(
        Msg::Exited {
            agent: "a".into(),
            pid: Some(100),
            status: Some(3),
            signal: None,
            screen: None,
        },
        t0 + Duration::from_secs(2),
    );
    let Effect::Emit(ev) = &fx[0] else {
        panic!("{fx:?}")
    };
    assert_eq!(ev.fields["uptime_secs"], 9.0);
    assert_eq!(ev.fields["exit_status"], 3);
}

#[test]
fn adoption_restarts_nothing() {
    let t0 = Instant::now();
    let l = layout(SPEC, "");
    let mut core = Core::new(l.agents, &l.monitor);
    let fx = core.step(
        Msg::Started {
            agent: "a".into(),
            pane: "%4".into(),
            pid: 44,
            adopted: true,
            age: None,
        },
        t0,
    );
    assert_eq!(kinds(&fx), [EventKind::AgentStarted]);
    assert_eq!(respawns(&fx), 0);
    let Some(Effect::Emit(ev)) = fx.first() else {
        panic!()
    };
    assert_eq!(ev.fields.get("adopted"), Some(&serde_json::json!(true)));
}

#[test]
fn on_stall_restart_restarts_without_counting_a_crash() {
    let t0 = Instant::now();
    let mut core = running(
        "{ name: a, role: WORKER, stall_after: 10s, on_stall: restart }",
        t0,
    );
    let fx = core.step(Msg::Tick, t0 + Duration::from_secs(10));
    assert_eq!(kinds(&fx), [EventKind::AgentStalled]);
    assert!(fx.contains(&Effect::Signal {
        agent: "a".into(),
        kill: false
    }));
    let fx = crash(&mut core, 100, t0 + Duration::from_secs(11));
    assert_eq!(respawns(&fx), 1);
    assert_eq!(core.agent("a").map(|a| a.restarts), Some(0));
}

#[test]
fn error_storm_once_per_window() {
    let t0 = Instant::now();
    let monitor = "monitor: { error_patterns: ['Traceback', 'panic'], error_storm: { count: 3, window: 10s } }\n";
    let mut core = running_with("{ name: a, role: WORKER }", monitor, t0);
    let mut storms = Vec::new();
    for s in 0..15 {
        let fx = core.step(
            Msg::Output {
                agent: "a".into(),
                bytes: b"work\npanic: boom\n".to_vec(),
            },
            t0 + Duration::from_secs(s),
        );
        storms.extend(fx.into_iter().filter_map(|e| match e {
            Effect::Emit(ev) if ev.kind == EventKind::ErrorStorm => Some((s, ev)),
            _ => None,
        }));
    }
    let at: Vec<u64> = storms.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        at,
        [2, 12],
        "at the third match, then once the window has passed: {storms:?}"
    );
    assert_eq!(
        storms[0].1.fields.get("pattern"),
        Some(&serde_json::json!("panic"))
    );
    assert_eq!(
        storms[0].1.fields.get("sample"),
        Some(&serde_json::json!("panic: boom"))
    );
}

#[test]
fn leak_detected_on_growth_not_on_noise_and_never_kills() {
    let t0 = Instant::now();
    let monitor = "monitor: { leak: { window: 60s, min_growth: 20% } }\n";
    let mut core = running_with("{ name: a, role: WORKER }", monitor, t0);
    let mut leaks = 0;
    for s in 0..=60u64 {
        let fx = core.step(
            Msg::Resources {
                agent: "a".into(),
                rss_bytes: (100 + s) << 20,
                cpu_percent: 1.0,
            },
            t0 + Duration::from_secs(s),
        );
        leaks += kinds(&fx)
            .iter()
            .filter(|k| **k == EventKind::MemoryLeak)
            .count();
        assert!(!fx.iter().any(|e| matches!(e, Effect::Signal { .. })));
    }
    assert_eq!(leaks, 1);

    let mut core = running_with("{ name: a, role: WORKER }", monitor, t0);
    for s in 0..=60u64 {
        let noise = if s % 2 == 0 { 3 } else { 0 };
        let fx = core.step(
            Msg::Resources {
                agent: "a".into(),
                rss_bytes: (100 + noise) << 20,
                cpu_percent: 1.0,
            },
            t0 + Duration::from_secs(s),
        );
        assert!(!kinds(&fx).contains(&EventKind::MemoryLeak));
    }
}

#[test]
fn memory_limit_alerts_then_restarts_once() {
    let t0 = Instant::now();
    let mut core = running("{ name: a, role: WORKER, limits: { memory: 100MiB } }", t0);
    let over = |core: &mut Core, s| {
        core.step(
            Msg::Resources {
                agent: "a".into(),
                rss_bytes: 200 << 20,
                cpu_percent: 1.0,
            },
            t0 + Duration::from_secs(s),
        )
    };
    let fx = over(&mut core, 1);
    assert_eq!(kinds(&fx), [EventKind::LimitExceeded]);
    assert!(fx.contains(&Effect::Signal {
        agent: "a".into(),
        kill: false
    }));
    assert!(over(&mut core, 2).is_empty(), "reported once");
    let mut core = running(
        "{ name: a, role: WORKER, limits: { memory: 100MiB }, on_limit: alert }",
        t0,
    );
    let fx = over(&mut core, 1);
    assert_eq!(kinds(&fx), [EventKind::LimitExceeded]);
    assert!(!fx.iter().any(|e| matches!(e, Effect::Signal { .. })));
}

#[test]
fn reload_adds_stops_and_updates_without_touching_the_rest() {
    let t0 = Instant::now();
    let text = |agents: &str| format!("session: s\nagents:\n{agents}");
    let parse = |t: &str| {
        crate::layout::parse(t, "t.yaml", &std::env::temp_dir()).unwrap_or_else(|e| panic!("{e}"))
    };
    let old = parse(&text(
        "  - { name: a, role: BOSS }\n  - { name: b, role: WORKER }\n  - { name: c, role: WORKER }\n",
    ));
    let mut core = Core::new(old.agents, &old.monitor);
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        core.step(
            Msg::Started {
                agent: (*n).into(),
                pane: format!("%{i}"),
                pid: 100 + i as u32,
                adopted: true,
                age: None,
            },
            t0,
        );
    }
    let new = parse(&text(
        "  - { name: a, role: BOSS }\n  - { name: b, role: WORKER, restart: { policy: never } }\n  - { name: d, role: WORKER }\n",
    ));
    let fx = core.step(
        Msg::Reload {
            agents: new.agents,
            monitor: new.monitor,
        },
        t0,
    );
    let Some(Effect::Emit(ev)) = fx
        .iter()
        .find(|e| matches!(e, Effect::Emit(ev) if ev.kind == EventKind::ConfigReloaded))
    else {
        panic!("{fx:?}")
    };
    assert_eq!(ev.fields.get("added"), Some(&serde_json::json!(["d"])));
    assert_eq!(ev.fields.get("removed"), Some(&serde_json::json!(["c"])));
    assert_eq!(ev.fields.get("changed"), Some(&serde_json::json!(["b"])));
    assert!(fx.contains(&Effect::Respawn { agent: "d".into() }));
    assert!(fx.contains(&Effect::Signal {
        agent: "c".into(),
        kill: false
    }));
    assert!(!fx.iter().any(|e| matches!(e, Effect::Signal { agent, .. } | Effect::Respawn { agent } if agent == "a" || agent == "b")));
    assert_eq!(
        core.agent("b").map(|a| a.spec.restart.policy),
        Some(RestartPolicy::Never)
    );
}

#[test]
fn an_exit_is_snapshotted_before_the_respawn() {
    let t0 = Instant::now();
    let mut core = running(SPEC, t0);
    let fx = crash(&mut core, 100, t0 + Duration::from_secs(10));
    let snap = fx.iter().position(|e| {
        matches!(
            e,
            Effect::Snapshot {
                reason: "agent_exited"
            }
        )
    });
    let respawn = fx.iter().position(|e| matches!(e, Effect::Respawn { .. }));
    assert!(
        matches!((snap, respawn), (Some(s), Some(r)) if s < r),
        "{fx:?}"
    );
}
