//! Pane output, from raw bytes to text lines, and error storms counted over those lines.
//!
//! Pure: bytes and times go in, lines and storms come out; no clock, no tmux.
//!
//! Memory is bounded whatever an agent prints: a line without a newline is cut at a cap,
//! escape sequences are dropped as they are parsed (never buffered), and the storm detector
//! keeps at most `count` timestamps and one sample line per pattern.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use regex::RegexSet;

use crate::layout::Monitor;

/// Longest line [`LineAssembler::new`] keeps before emitting it unterminated.
pub const DEFAULT_MAX_LINE_BYTES: usize = 4096;

/// Where the assembler is inside an escape sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    None,
    /// Just after ESC.
    Esc,
    /// ESC followed by intermediate bytes, as in `ESC ( B` (character set selection).
    EscIntermediate,
    /// `ESC [` parameters, up to the final byte.
    Csi,
    /// OSC, DCS, SOS, PM or APC payload, up to BEL or ST.
    String,
    /// ESC inside a string: `\` makes it ST, anything else starts a new sequence.
    StringEsc,
}

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;
/// CAN and SUB abort a sequence in every VT parser.
const CAN: u8 = 0x18;
const SUB: u8 = 0x1a;

/// Turns pane output chunks into complete lines of plain text.
///
/// Chunks may split lines, UTF-8 characters and escape sequences anywhere. Lines come out
/// without ANSI/VT escape sequences (CSI, OSC and the other string sequences, two- and
/// three-byte ESC sequences), without `\r` and without other control characters except
/// tab: they are for matching patterns and showing a last line, not for redrawing a
/// screen. `\r` is dropped rather than treated as "back to column 0", so a progress bar
/// redrawn in place reads as one long line (cut at the cap) instead of losing what it
/// overwrote. Invalid UTF-8 becomes U+FFFD.
#[derive(Clone, Debug)]
pub struct LineAssembler {
    line: Vec<u8>,
    escape: Escape,
    max_line_bytes: usize,
}

impl Default for LineAssembler {
    fn default() -> Self {
        Self::new()
    }
}

impl LineAssembler {
    pub fn new() -> Self {
        Self::with_max_line(DEFAULT_MAX_LINE_BYTES)
    }

    /// An assembler that emits a line once it reaches `max_line_bytes` bytes of text even
    /// without a newline (never fewer than 4, so one character always fits).
    pub fn with_max_line(max_line_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            escape: Escape::None,
            max_line_bytes: max_line_bytes.max(4),
        }
    }

    /// Feeds one chunk of output; returns the lines it completed, oldest first.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &byte in chunk {
            self.byte(byte, &mut lines);
        }
        lines
    }

    /// The text after the last complete line: a prompt waiting for input usually ends
    /// without a newline. A character split by the chunk boundary is left out.
    pub fn pending(&self) -> String {
        let complete = self.line.len() - incomplete_utf8_tail(&self.line);
        String::from_utf8_lossy(&self.line[..complete]).into_owned()
    }

    /// Emits the unterminated line, if any, for when the output ends (the pane closed).
    pub fn finish(&mut self) -> Option<String> {
        self.escape = Escape::None;
        (!self.line.is_empty()).then(|| take_line(&mut self.line))
    }

    fn byte(&mut self, byte: u8, lines: &mut Vec<String>) {
        match self.escape {
            Escape::None => self.text(byte, lines),
            Escape::Esc => match byte {
                b'[' => self.escape = Escape::Csi,
                b']' | b'P' | b'X' | b'^' | b'_' => self.escape = Escape::String,
                0x20..=0x2f => self.escape = Escape::EscIntermediate,
                ESC => {}
                // A control character is not part of the sequence: terminals execute it, so
                // a newline right after a stray ESC still ends the line.
                0x00..=0x1f => self.abort(byte, lines),
                _ => self.escape = Escape::None,
            },
            Escape::EscIntermediate => match byte {
                0x20..=0x2f => {}
                0x30..=0x7e => self.escape = Escape::None,
                ESC => self.escape = Escape::Esc,
                _ => self.abort(byte, lines),
            },
            Escape::Csi => match byte {
                0x40..=0x7e => self.escape = Escape::None,
                0x20..=0x3f => {}
                ESC => self.escape = Escape::Esc,
                CAN | SUB => self.escape = Escape::None,
                _ => self.abort(byte, lines),
            },
            Escape::String => match byte {
                BEL | CAN | SUB => self.escape = Escape::None,
                ESC => self.escape = Escape::StringEsc,
                // No valid string sequence holds a newline; ending it there keeps one
                // unterminated OSC from swallowing all later output.
                b'\n' => self.abort(byte, lines),
                _ => {}
            },
            Escape::StringEsc => match byte {
                b'\\' => self.escape = Escape::None,
                _ => {
                    self.escape = Escape::Esc;
                    self.byte(byte, lines);
                }
            },
        }
    }

    /// Ends the current sequence and treats `byte` as ordinary output.
    fn abort(&mut self, byte: u8, lines: &mut Vec<String>) {
        self.escape = Escape::None;
        self.text(byte, lines);
    }

    fn text(&mut self, byte: u8, lines: &mut Vec<String>) {
        match byte {
            b'\n' => lines.push(take_line(&mut self.line)),
            ESC => self.escape = Escape::Esc,
            b'\t' => self.append(b'\t', lines),
            0x00..=0x1f | 0x7f => {}
            _ => self.append(byte, lines),
        }
    }

    fn append(&mut self, byte: u8, lines: &mut Vec<String>) {
        self.line.push(byte);
        if self.line.len() >= self.max_line_bytes {
            // Cut before a character the cap split, so both halves stay valid UTF-8.
            let keep = incomplete_utf8_tail(&self.line);
            let rest = self.line.split_off(self.line.len() - keep);
            lines.push(take_line(&mut self.line));
            self.line = rest;
        }
    }
}

fn take_line(line: &mut Vec<u8>) -> String {
    String::from_utf8(std::mem::take(line))
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// How many bytes at the end of `bytes` start a UTF-8 character that is not complete yet.
fn incomplete_utf8_tail(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let byte = bytes[bytes.len() - back];
        let needed = match byte {
            0x80..=0xbf => continue,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => return 0,
        };
        return if back < needed { back } else { 0 };
    }
    0
}

/// Longest sample line kept per pattern; lines from a [`LineAssembler`] are no longer,
/// this bounds lines from elsewhere.
const MAX_SAMPLE_BYTES: usize = DEFAULT_MAX_LINE_BYTES;

/// Many error lines in a short time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorStorm {
    /// The pattern (as written in the layout) that matched most of the lines in the window.
    pub pattern: String,
    /// The latest line that matched `pattern`.
    pub sample: String,
    /// Matching lines in the window when the storm was reported.
    pub count: u32,
}

/// Counts lines matching any of the layout's `error_patterns` and reports a storm when
/// `count` of them fall within `window` of each other.
///
/// Rules:
/// - a line counts once, however many patterns it matches; it is attributed to the first
///   matching pattern in layout order;
/// - a match stays in the window while it is less than `window` old (sliding window);
/// - a storm is reported at most once per `window`: after a report the detector stays
///   quiet until `window` has passed since it, then a storm that is still going (or a new
///   one) is reported again on the next matching line;
/// - the reported pattern is the one with most matches in the window, the first in layout
///   order on a tie.
#[derive(Clone, Debug)]
pub struct ErrorStormDetector {
    patterns: RegexSet,
    count: usize,
    window: Duration,
    /// Time and pattern index of the latest matches, at most `count` of them: older ones
    /// cannot change whether `count` matches fit in the window.
    recent: VecDeque<(Instant, usize)>,
    /// Latest matching line per pattern.
    samples: Vec<Option<String>>,
    reported_at: Option<Instant>,
}

impl ErrorStormDetector {
    /// The patterns are regular expressions; the layout has validated them, so an error
    /// here means a caller built them some other way. A `count` of 0 acts as 1.
    pub fn new(patterns: &[String], count: u32, window: Duration) -> Result<Self, regex::Error> {
        let patterns = RegexSet::new(patterns)?;
        Ok(Self {
            samples: vec![None; patterns.len()],
            patterns,
            count: usize::try_from(count).unwrap_or(usize::MAX).max(1),
            window,
            recent: VecDeque::new(),
            reported_at: None,
        })
    }

    /// The detector the layout's `monitor.error_patterns` and `error_storm` ask for.
    pub fn from_monitor(monitor: &Monitor) -> Result<Self, regex::Error> {
        Self::new(
            &monitor.error_patterns,
            monitor.error_storm_count,
            monitor.error_storm_window.0,
        )
    }

    /// Looks at one output line seen at `at`; returns the storm it completes, if any.
    pub fn observe(&mut self, at: Instant, line: &str) -> Option<ErrorStorm> {
        let matched = self.patterns.matches(line);
        let first = matched.iter().next()?;
        let sample = &line[..line.floor_char_boundary(MAX_SAMPLE_BYTES)];
        for index in matched.iter() {
            if let Some(slot) = self.samples.get_mut(index) {
                *slot = Some(sample.to_owned());
            }
        }
        self.recent.push_back((at, first));
        if self.recent.len() > self.count {
            self.recent.pop_front();
        }
        while self
            .recent
            .front()
            .is_some_and(|(seen, _)| at.saturating_duration_since(*seen) >= self.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() < self.count {
            return None;
        }
        if self
            .reported_at
            .is_some_and(|reported| at.saturating_duration_since(reported) < self.window)
        {
            return None;
        }
        self.reported_at = Some(at);
        let top = self.most_matched();
        Some(ErrorStorm {
            pattern: self
                .patterns
                .patterns()
                .get(top)
                .cloned()
                .unwrap_or_default(),
            sample: self
                .samples
                .get(top)
                .and_then(Clone::clone)
                .unwrap_or_default(),
            count: u32::try_from(self.recent.len()).unwrap_or(u32::MAX),
        })
    }

    /// Index of the pattern with most matches in the window, the lowest on a tie.
    fn most_matched(&self) -> usize {
        let mut tally = vec![0usize; self.patterns.len()];
        for &(_, index) in &self.recent {
            if let Some(n) = tally.get_mut(index) {
                *n += 1;
            }
        }
        let mut best = 0;
        for (index, &n) in tally.iter().enumerate() {
            if n > tally.get(best).copied().unwrap_or(0) {
                best = index;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(a: &mut LineAssembler, chunks: &[&[u8]]) -> Vec<String> {
        chunks.iter().flat_map(|c| a.push(c)).collect()
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let mut a = LineAssembler::new();
        assert_eq!(all(&mut a, &[b"hel", b"lo\nwor", b"ld"]), ["hello"]);
        assert_eq!(a.pending(), "world");
        assert_eq!(a.push(b"!\n"), ["world!"]);
        assert_eq!(a.pending(), "");
    }

    #[test]
    fn empty_lines_are_kept() {
        let mut a = LineAssembler::new();
        assert_eq!(a.push(b"a\n\nb\n"), ["a", "", "b"]);
    }

    #[test]
    fn crlf_and_carriage_returns_are_dropped() {
        let mut a = LineAssembler::new();
        assert_eq!(
            all(&mut a, &[b"one\r", b"\ntwo\r\n", b"3%\r50%\n"]),
            ["one", "two", "3%50%"]
        );
    }

    #[test]
    fn utf8_split_between_chunks_survives() {
        let text = "café ✓ 🦀\n".as_bytes();
        // Every split point, including inside each multi-byte character.
        for cut in 0..text.len() {
            let mut a = LineAssembler::new();
            let (head, tail) = text.split_at(cut);
            assert_eq!(all(&mut a, &[head, tail]), ["café ✓ 🦀"], "cut at {cut}");
        }
        let mut a = LineAssembler::new();
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(all(&mut a, &bytes), ["café ✓ 🦀"]);
    }

    #[test]
    fn pending_leaves_out_a_split_character() {
        let mut a = LineAssembler::new();
        a.push(&"ok ✓".as_bytes()[..4]);
        assert_eq!(a.pending(), "ok ");
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        let mut a = LineAssembler::new();
        assert_eq!(a.push(b"bad \xff byte\n"), ["bad \u{fffd} byte"]);
    }

    #[test]
    fn escape_sequences_are_stripped() {
        let mut a = LineAssembler::new();
        let out = a.push(
            b"\x1b[1;31merror\x1b[0m: \x1b]0;title\x07boom\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\\n\
              \x1b(Bplain\x1b7\x1b8 \x1b[?25lhidden cursor\x1b[?25h\n\
              \x1bP+q544e\x1b\\dcs gone\x07\x08\n",
        );
        assert_eq!(out, ["error: boomlink", "plain hidden cursor", "dcs gone"]);
    }

    #[test]
    fn escape_sequences_split_across_chunks_are_stripped() {
        let whole = b"\x1b[38;5;196mred\x1b[0m \x1b]0;t\x1b\\x\n";
        for cut in 0..whole.len() {
            let mut a = LineAssembler::new();
            let (head, tail) = whole.split_at(cut);
            assert_eq!(all(&mut a, &[head, tail]), ["red x"], "cut at {cut}");
        }
    }

    #[test]
    fn tabs_are_kept_and_other_controls_dropped() {
        let mut a = LineAssembler::new();
        assert_eq!(a.push(b"a\tb\x07c\x00d\x7f\n"), ["a\tbcd"]);
    }

    #[test]
    fn unterminated_osc_ends_at_a_newline() {
        let mut a = LineAssembler::new();
        assert_eq!(a.push(b"x\x1b]0;never closed\nnext\n"), ["x", "next"]);
    }

    #[test]
    fn newline_after_a_stray_escape_still_ends_the_line() {
        let mut a = LineAssembler::new();
        assert_eq!(a.push(b"a\x1b\nb\n"), ["a", "b"]);
    }

    #[test]
    fn long_line_is_cut_at_the_cap() {
        let mut a = LineAssembler::with_max_line(8);
        assert_eq!(a.push(b"0123456789abcdefXY"), ["01234567", "89abcdef"]);
        assert_eq!(a.pending(), "XY");
        assert_eq!(a.push(b"\n"), ["XY"]);
    }

    #[test]
    fn flood_without_newlines_stays_bounded() {
        let mut a = LineAssembler::new();
        let chunk = vec![b'x'; 10_000];
        let mut emitted = 0;
        for _ in 0..100 {
            let lines = a.push(&chunk);
            assert!(lines.iter().all(|l| l.len() == DEFAULT_MAX_LINE_BYTES));
            emitted += lines.len();
            assert!(a.line.len() < DEFAULT_MAX_LINE_BYTES);
        }
        assert_eq!(emitted, 1_000_000 / DEFAULT_MAX_LINE_BYTES);
    }

    #[test]
    fn cap_never_splits_a_character() {
        // 7 bytes of ASCII, then a 3-byte character across the 8-byte cap.
        let mut a = LineAssembler::with_max_line(8);
        assert_eq!(a.push("abcdefg✓h\n".as_bytes()), ["abcdefg", "✓h"]);
    }

    #[test]
    fn escapes_do_not_count_towards_the_cap() {
        let mut a = LineAssembler::with_max_line(8);
        assert_eq!(a.push(b"\x1b[1m\x1b[31m\x1b[4mabc\x1b[0m\n"), ["abc"]);
    }

    #[test]
    fn finish_emits_the_unterminated_line() {
        let mut a = LineAssembler::new();
        a.push(b"done\nprompt> ");
        assert_eq!(a.finish().as_deref(), Some("prompt> "));
        assert_eq!(a.finish(), None);
    }

    // Error storms.

    const SEC: Duration = Duration::from_secs(1);

    fn storms(count: u32, window: Duration) -> ErrorStormDetector {
        let patterns = ["panic".to_owned(), "Traceback|rate limit".to_owned()];
        ErrorStormDetector::new(&patterns, count, window).expect("valid patterns")
    }

    #[test]
    fn burst_fires_exactly_once() {
        let mut d = storms(5, 60 * SEC);
        let t0 = Instant::now();
        let reports: Vec<ErrorStorm> = (0..50)
            .filter_map(|i| d.observe(t0 + SEC * i / 10, &format!("thread panicked {i}")))
            .collect();
        assert_eq!(reports.len(), 1);
        assert_eq!(
            reports[0],
            ErrorStorm {
                pattern: "panic".to_owned(),
                sample: "thread panicked 4".to_owned(),
                count: 5,
            }
        );
    }

    #[test]
    fn fires_on_the_count_th_match() {
        let mut d = storms(3, 60 * SEC);
        let t0 = Instant::now();
        assert!(d.observe(t0, "panic").is_none());
        assert!(d.observe(t0 + SEC, "all good").is_none());
        assert!(d.observe(t0 + 2 * SEC, "panic").is_none());
        assert!(d.observe(t0 + 3 * SEC, "panic").is_some());
    }

    #[test]
    fn matches_spread_thinner_than_the_window_never_fire() {
        let mut d = storms(5, 60 * SEC);
        let t0 = Instant::now();
        // One match every 15 s: at most 4 within any 60 s.
        for i in 0..100 {
            assert_eq!(d.observe(t0 + 15 * SEC * i, "panic"), None, "match {i}");
        }
    }

    #[test]
    fn a_match_exactly_one_window_old_has_left_it() {
        let mut d = storms(2, 10 * SEC);
        let t0 = Instant::now();
        assert!(d.observe(t0, "panic").is_none());
        assert!(d.observe(t0 + 10 * SEC, "panic").is_none());
        assert!(d.observe(t0 + 19 * SEC, "panic").is_some());
    }

    #[test]
    fn fires_again_after_the_window_passes() {
        let mut d = storms(3, 60 * SEC);
        let t0 = Instant::now();
        let burst = |d: &mut ErrorStormDetector, start: Instant| {
            (0..10)
                .filter_map(|i| d.observe(start + SEC * i, "Traceback (most recent call last)"))
                .count()
        };
        assert_eq!(burst(&mut d, t0), 1);
        // Too soon: still inside the window of the first report.
        assert_eq!(burst(&mut d, t0 + 30 * SEC), 0);
        assert_eq!(burst(&mut d, t0 + 62 * SEC), 1);
    }

    #[test]
    fn ongoing_storm_is_reported_once_per_window() {
        let mut d = storms(3, 60 * SEC);
        let t0 = Instant::now();
        let reports = (0..600)
            .filter(|i| d.observe(t0 + SEC * *i, "rate limit exceeded").is_some())
            .count();
        // Reports at 2 s, 62 s, ..., 542 s.
        assert_eq!(reports, 10);
    }

    #[test]
    fn storm_names_the_most_matched_pattern_and_its_latest_line() {
        let mut d = storms(4, 60 * SEC);
        let t0 = Instant::now();
        assert!(d.observe(t0, "panic at the disco").is_none());
        assert!(d.observe(t0 + SEC, "429 rate limit").is_none());
        assert!(
            d.observe(t0 + 2 * SEC, "Traceback (most recent call last)")
                .is_none()
        );
        let storm = d
            .observe(t0 + 3 * SEC, "panic: oh no")
            .expect("4 matches in 60 s");
        // Two and two: the tie goes to the first pattern in layout order.
        assert_eq!(storm.pattern, "panic");
        assert_eq!(storm.sample, "panic: oh no");
        let mut d = storms(3, 60 * SEC);
        d.observe(t0, "rate limit");
        d.observe(t0 + SEC, "panic");
        let storm = d.observe(t0 + 2 * SEC, "Traceback").expect("3 matches");
        assert_eq!(storm.pattern, "Traceback|rate limit");
        assert_eq!(storm.sample, "Traceback");
    }

    #[test]
    fn a_line_matching_two_patterns_counts_once() {
        let mut d = storms(2, 60 * SEC);
        assert!(d.observe(Instant::now(), "panic: rate limit").is_none());
    }

    #[test]
    fn no_patterns_never_fire() {
        let mut d = ErrorStormDetector::new(&[], 1, 60 * SEC).expect("empty set is valid");
        assert_eq!(d.observe(Instant::now(), "panic"), None);
    }

    #[test]
    fn long_sample_is_cut_on_a_character_boundary() {
        let mut d = storms(1, 60 * SEC);
        let line = format!("panic {}", "✓".repeat(3000));
        let storm = d.observe(Instant::now(), &line).expect("count 1");
        assert!(storm.sample.len() <= MAX_SAMPLE_BYTES);
        assert!(storm.sample.starts_with("panic ✓"));
    }

    #[test]
    fn memory_stays_bounded_during_a_flood() {
        let mut d = storms(10, 60 * SEC);
        let t0 = Instant::now();
        for i in 0..10_000 {
            d.observe(t0 + Duration::from_millis(i), "panic");
        }
        assert_eq!(d.recent.len(), 10);
    }
}
