//! Writes that fail degrade the supervisor, never stop it: a full disk (or a file made
//! read-only, or a folder removed) costs events, counters and snapshots, not agents.
//!
//! Each kind of write (`events`, `counters`, `snapshot`, `audit`, …) is reported once when
//! it starts failing, with the error, and once when it works again, with how many writes
//! failed meanwhile: a full disk gives two lines, not one per tick. Pure: the shell says
//! what failed and what worked, and prints the events this returns.

use std::collections::BTreeMap;
use std::time::Instant;

use super::event::{Event, EventKind};

#[derive(Debug, Default)]
pub struct WriteHealth {
    failing: BTreeMap<&'static str, Failing>,
}

#[derive(Debug)]
struct Failing {
    since: Instant,
    failures: u64,
}

impl WriteHealth {
    /// A write of kind `what` failed; the `write_failed` event to report if it is the
    /// first failure since that kind last worked.
    pub fn failed(&mut self, what: &'static str, error: &str, now: Instant) -> Option<Event> {
        if let Some(f) = self.failing.get_mut(what) {
            f.failures += 1;
            return None;
        }
        self.failing.insert(
            what,
            Failing {
                since: now,
                failures: 1,
            },
        );
        Some(
            Event::new(EventKind::WriteFailed, None)
                .with("what", what)
                .with("error", error)
                .with(
                    "note",
                    "orch keeps supervising and restarting agents; this is reported once, and again when writing works",
                ),
        )
    }

    /// A write of kind `what` worked; the `write_recovered` event if it had been failing.
    pub fn worked(&mut self, what: &'static str, now: Instant) -> Option<Event> {
        let f = self.failing.remove(what)?;
        Some(
            Event::new(EventKind::WriteRecovered, None)
                .with("what", what)
                .with("failed_writes", f.failures)
                .with(
                    "failing_secs",
                    now.saturating_duration_since(f.since).as_secs_f64().round(),
                ),
        )
    }

    /// Whether writes of kind `what` are failing now.
    pub fn is_failing(&self, what: &str) -> bool {
        self.failing.contains_key(what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_failing_kind_is_reported_once_then_once_more_when_it_works() {
        let mut h = WriteHealth::default();
        let t0 = Instant::now();
        assert!(h.worked("events", t0).is_none(), "nothing to recover from");
        let first = h
            .failed("events", "No space left on device", t0)
            .expect("first");
        assert_eq!(first.kind, EventKind::WriteFailed);
        assert_eq!(first.fields["what"], "events");
        for _ in 0..1000 {
            assert!(h.failed("events", "No space left on device", t0).is_none());
        }
        // Another kind is reported on its own.
        assert!(
            h.failed("counters", "No space left on device", t0)
                .is_some()
        );
        assert!(h.is_failing("events"));
        let back = h
            .worked("events", t0 + Duration::from_secs(30))
            .expect("recovered");
        assert_eq!(back.kind, EventKind::WriteRecovered);
        assert_eq!(back.fields["failed_writes"], 1001);
        assert_eq!(back.fields["failing_secs"], 30.0);
        assert!(!h.is_failing("events") && h.is_failing("counters"));
        assert!(h.failed("events", "again", t0).is_some(), "a new episode");
    }
}
