//! What a transcript keeps of a pane's output: whole lines, redacted. Pure; the writer
//! feeds it whatever a read returned and appends what comes back.

use crate::snapshot::redact::Redactor;

/// A PEM private key is held until its END line so it is redacted whole; past this much a
/// "key" is something else and is let through.
const MAX_HELD: usize = 64 * 1024;

/// A line without its newline yet is written anyway past this size, so a program that
/// never prints a newline cannot make the writer hold its output without end.
const MAX_PARTIAL: usize = 64 * 1024;

/// One pane's output between reads: the unfinished last line and a PEM block being held.
#[derive(Debug, Default)]
pub struct Lines {
    partial: Vec<u8>,
    held: Vec<u8>,
}

impl Lines {
    /// Takes the next bytes the pane printed; returns what is ready to append (redacted).
    pub fn feed(&mut self, bytes: &[u8], redactor: &Redactor) -> Vec<u8> {
        let mut pending = std::mem::take(&mut self.partial);
        pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + end + 1;
            self.line(&pending[start..end], redactor, &mut out);
            start = end;
        }
        pending.drain(..start);
        self.partial = pending;
        if self.partial.len() >= MAX_PARTIAL {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, redactor, &mut out);
        }
        out
    }

    /// The pane's output ended: everything still waiting, redacted.
    pub fn finish(&mut self, redactor: &Redactor) -> Vec<u8> {
        let mut out = Vec::new();
        let line = std::mem::take(&mut self.partial);
        if !line.is_empty() {
            self.line(&line, redactor, &mut out);
        }
        out.extend(redactor.redact_bytes(&std::mem::take(&mut self.held)));
        out
    }

    fn line(&mut self, line: &[u8], redactor: &Redactor, out: &mut Vec<u8>) {
        let in_pem = !self.held.is_empty()
            || contains(line, b"-----BEGIN") && contains(line, b"PRIVATE KEY");
        if !in_pem {
            out.extend(redactor.redact_bytes(line));
            return;
        }
        self.held.extend_from_slice(line);
        if contains(line, b"-----END") || self.held.len() >= MAX_HELD {
            out.extend(redactor.redact_bytes(&std::mem::take(&mut self.held)));
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(&["hunter[0-9]".to_owned()]).expect("patterns")
    }

    #[test]
    fn whole_lines_only_until_the_end() {
        let r = redactor();
        let mut lines = Lines::default();
        assert_eq!(lines.feed(b"one\ntw", &r), b"one\n");
        // A secret split across two reads is still caught: the line is redacted whole.
        assert_eq!(lines.feed(b"o hunt", &r), b"");
        assert_eq!(lines.feed(b"er2 x\nthree", &r), b"two [REDACTED] x\n");
        assert_eq!(lines.finish(&r), b"three");
        assert_eq!(lines.finish(&r), b"");
    }

    #[test]
    fn a_private_key_is_held_until_its_end_line() {
        let r = redactor();
        let mut lines = Lines::default();
        let out = lines.feed(b"before\n-----BEGIN RSA PRIVATE KEY-----\nMIIE\n", &r);
        assert_eq!(out, b"before\n");
        let out = lines.feed(b"abcd\n-----END RSA PRIVATE KEY-----\nafter\n", &r);
        assert_eq!(out, b"[REDACTED]\nafter\n");
    }

    #[test]
    fn a_key_without_end_is_redacted_when_the_pane_closes_and_not_held_forever() {
        let r = redactor();
        let mut lines = Lines::default();
        assert_eq!(lines.feed(b"-----BEGIN PRIVATE KEY-----\nMIIE\n", &r), b"");
        assert_eq!(lines.finish(&r), b"[REDACTED]");

        let mut lines = Lines::default();
        assert!(lines.feed(b"-----BEGIN PRIVATE KEY-----\n", &r).is_empty());
        let filler = vec![b'x'; 1000];
        let mut out = Vec::new();
        for _ in 0..70 {
            out.extend(lines.feed(&filler, &r));
            out.extend(lines.feed(b"\n", &r));
        }
        assert!(!out.is_empty(), "given up holding after {MAX_HELD} bytes");
    }

    #[test]
    fn a_line_that_never_ends_is_written_past_the_limit() {
        let r = redactor();
        let mut lines = Lines::default();
        assert!(lines.feed(&vec![b'.'; MAX_PARTIAL - 1], &r).is_empty());
        assert_eq!(lines.feed(b"..", &r).len(), MAX_PARTIAL + 1);
    }
}
