//! Redaction: secrets an agent printed (or a layout's `env:` holds) never reach a snapshot.
//!
//! Built-in patterns cover common credentials (OpenAI/Anthropic `sk-…` keys, GitHub
//! `ghp_…`/`github_pat_…` tokens, AWS `AKIA…` key ids, Slack `xoxb-`/`xoxp-` tokens, PEM
//! private key blocks, also one whose END line is missing); `snapshot.redact` adds the
//! layout's own. Each match becomes `[REDACTED]`.
//!
//! Colour: pane contents are captured with their escape sequences (`-e`), and a program
//! that colours part of a key (syntax highlighting, a prompt) puts `ESC[…m` in the middle
//! of it. Patterns are therefore matched against the text with escape sequences removed
//! and each match is mapped back onto the original bytes, so an escape sequence inside a
//! key cannot hide it; the escapes inside a redacted span are dropped with it. Wrapped
//! lines are joined by the capture (`-J`), so a key the terminal wrapped is one string too.
//! What redaction cannot see: a key split by other text (e.g. cursor movement redrawing
//! it piecemeal), or a secret no pattern describes.

use regex::bytes::Regex;

pub const REDACTED: &str = "[REDACTED]";

/// Common secret forms, matched on text without escape sequences.
const BUILTIN: &[&str] = &[
    // OpenAI and Anthropic keys: sk-…, sk-proj-…, sk-ant-api03-…
    r"sk-[A-Za-z0-9_-]{20,}",
    // GitHub tokens: classic (ghp_), OAuth/app/refresh (gho_, ghu_, ghs_, ghr_), fine-grained.
    r"gh[pousr]_[A-Za-z0-9]{20,}",
    r"github_pat_[A-Za-z0-9_]{20,}",
    // AWS access key ids.
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",
    // Slack bot and user tokens.
    r"xox[bpas]-[A-Za-z0-9-]{10,}",
    // PEM private keys, through their END line or, if it is missing, to the end.
    r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY-----|.*)",
];

/// A compiled set of patterns.
#[derive(Clone, Debug)]
pub struct Redactor {
    patterns: Vec<Regex>,
    pem_begin: Regex,
    pem_end: Regex,
}

impl Redactor {
    /// The built-in patterns plus `extra` (the layout's `snapshot.redact`, already checked
    /// when the layout was loaded).
    pub fn new(extra: &[String]) -> anyhow::Result<Redactor> {
        let mut patterns = Vec::with_capacity(BUILTIN.len() + extra.len());
        for p in BUILTIN {
            patterns.push(Regex::new(p)?);
        }
        for p in extra {
            patterns.push(
                Regex::new(p).map_err(|e| anyhow::anyhow!("snapshot.redact pattern {p:?}: {e}"))?,
            );
        }
        Ok(Redactor {
            patterns,
            pem_begin: Regex::new(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")?,
            pem_end: Regex::new(r"-----END [A-Z0-9 ]*PRIVATE KEY-----")?,
        })
    }

    /// `text` with every match replaced, escape sequences inside a match removed with it.
    pub fn redact_bytes(&self, text: &[u8]) -> Vec<u8> {
        let spans = if text.contains(&0x1b) {
            let (plain, map) = strip_escapes(text);
            // Back onto the original bytes: a match covers from its first visible byte to
            // its last visible byte, escapes in between included.
            self.spans(&plain)
                .into_iter()
                .map(|(s, e)| (map[s], map[e - 1] + 1))
                .collect()
        } else {
            self.spans(text)
        };
        if spans.is_empty() {
            return text.to_vec();
        }
        let mut out = Vec::with_capacity(text.len());
        let mut at = 0;
        for (s, e) in spans {
            out.extend_from_slice(&text[at..s]);
            out.extend_from_slice(REDACTED.as_bytes());
            at = e;
        }
        out.extend_from_slice(&text[at..]);
        out
    }

    /// Whether `text` ends inside a private key block (a BEGIN line with no END after it):
    /// text that follows it must then be redacted together with it, not on its own.
    /// The other patterns match within a line.
    pub fn leaves_block_open(&self, text: &[u8]) -> bool {
        let plain;
        let text = if text.contains(&0x1b) {
            plain = strip_escapes(text).0;
            &plain[..]
        } else {
            text
        };
        self.pem_begin
            .find_iter(text)
            .last()
            .is_some_and(|begin| !self.pem_end.is_match(&text[begin.end()..]))
    }

    pub fn redact_str(&self, text: &str) -> String {
        let mut spans = self.spans(text.as_bytes());
        if spans.is_empty() {
            return text.to_owned();
        }
        // Matches may end inside a UTF-8 character (a user pattern like `.{3}` on bytes);
        // widen them to character boundaries.
        for (s, e) in &mut spans {
            while !text.is_char_boundary(*s) {
                *s -= 1;
            }
            while !text.is_char_boundary(*e) {
                *e += 1;
            }
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (s, e) in spans {
            if s < at {
                at = at.max(e);
                continue;
            }
            out.push_str(&text[at..s]);
            out.push_str(REDACTED);
            at = e;
        }
        out.push_str(&text[at..]);
        out
    }

    /// Redacts every string inside a JSON value (object keys stay as they are).
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => {
                let r = self.redact_str(s);
                if r != *s {
                    *s = r;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            serde_json::Value::Object(map) => {
                map.values_mut().for_each(|v| self.redact_json(v));
            }
            _ => {}
        }
    }

    /// Sorted, merged byte ranges of all matches of all patterns.
    fn spans(&self, text: &[u8]) -> Vec<(usize, usize)> {
        let mut spans: Vec<(usize, usize)> = self
            .patterns
            .iter()
            .flat_map(|p| p.find_iter(text).map(|m| (m.start(), m.end())))
            .filter(|(s, e)| e > s)
            .collect();
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
        for (s, e) in spans {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        merged
    }
}

/// The text without ANSI escape sequences, and for each of its bytes the index of that
/// byte in `text`. CSI (`ESC [ … final`), OSC (`ESC ] … BEL|ESC \`) and two-byte escapes
/// are removed, which covers what `capture-pane -e` emits.
fn strip_escapes(text: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut plain = Vec::with_capacity(text.len());
    let mut map = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] != 0x1b {
            plain.push(text[i]);
            map.push(i);
            i += 1;
            continue;
        }
        i += 1;
        match text.get(i) {
            Some(b'[') => {
                i += 1;
                while i < text.len() && !(0x40..=0x7e).contains(&text[i]) {
                    i += 1;
                }
                i += 1;
            }
            Some(b']') => {
                i += 1;
                while i < text.len() {
                    if text[i] == 0x07 {
                        i += 1;
                        break;
                    }
                    if text[i] == 0x1b && text.get(i + 1) == Some(&b'\\') {
                        i += 2;
                        break;
                    }
                    i += 1;
                }
            }
            Some(_) => i += 1,
            None => {}
        }
    }
    (plain, map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> &'static Redactor {
        static R: std::sync::LazyLock<Redactor> = std::sync::LazyLock::new(|| {
            Redactor::new(&["internal-[0-9]{6}".to_owned()]).expect("patterns")
        });
        &R
    }

    #[test]
    fn an_unfinished_key_block_is_open() {
        let begin = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA\n";
        assert!(r().leaves_block_open(begin));
        assert!(r().leaves_block_open(b"-----BEGIN \x1b[1mRSA PRIVATE KEY-----\nAAAA\n"));
        let mut whole = begin.to_vec();
        whole.extend_from_slice(b"-----END OPENSSH PRIVATE KEY-----\nls\n");
        assert!(!r().leaves_block_open(&whole));
        assert!(!r().leaves_block_open(b"sk-abcdefghijklmnopqrstuvwx1234\n"));
    }

    #[test]
    fn builtin_secrets_are_redacted() {
        let secrets = [
            "sk-abcdefghijklmnopqrstuvwx1234",
            "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz_0123456789",
            "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx",
            "ghp_0123456789abcdefghijABCDEFGHIJ012345",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
            "AKIAIOSFODNN7EXAMPLE",
            "xoxb-1234567890-abcdefghij",
            "xoxp-1234567890-abcdefghij",
            "internal-123456",
        ];
        for s in secrets {
            let text = format!("key={s} rest\n");
            let out = r().redact_str(&text);
            assert_eq!(out, "key=[REDACTED] rest\n", "{s}");
            let out = r().redact_bytes(text.as_bytes());
            assert_eq!(out, b"key=[REDACTED] rest\n", "{s}");
        }
    }

    #[test]
    fn pem_blocks_whole_or_cut_off() {
        let text =
            "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAAA\n-----END RSA PRIVATE KEY-----\nb\n";
        assert_eq!(r().redact_str(text), "a\n[REDACTED]\nb\n");
        let cut = "a\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n";
        assert_eq!(r().redact_str(cut), "a\n[REDACTED]");
        let public = "-----BEGIN PUBLIC KEY-----\nMIIB\n";
        assert_eq!(r().redact_str(public), public);
    }

    #[test]
    fn colour_inside_a_key_does_not_hide_it() {
        let text = b"x \x1b[31msk-abcdefghij\x1b[1;32mklmnopqrstuvwxyz\x1b[0m y\n";
        let out = r().redact_bytes(text);
        assert_eq!(out, b"x \x1b[31m[REDACTED]\x1b[0m y\n".to_vec());
        let osc = b"\x1b]8;;http://x\x1b\\AKIAIOSF\x1b[1mODNN7EXAMPLE";
        assert_eq!(
            r().redact_bytes(osc),
            b"\x1b]8;;http://x\x1b\\[REDACTED]".to_vec()
        );
    }

    proptest::proptest! {
        #[test]
        fn escapes_at_any_place_in_a_key_never_hide_it(
            cuts in proptest::collection::vec(0usize..32, 0..5),
            prefix in "[a-z ]{0,20}",
            suffix in "[a-z ]{0,20}",
            colour in 0u8..8,
        ) {
            let key = "sk-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123";
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut text = format!("{prefix} ").into_bytes();
            let mut at = 0;
            for c in cuts {
                text.extend_from_slice(&key.as_bytes()[at..c]);
                text.extend_from_slice(format!("\x1b[3{colour}m").as_bytes());
                at = c;
            }
            text.extend_from_slice(&key.as_bytes()[at..]);
            text.extend_from_slice(format!(" {suffix}\n").as_bytes());
            let out = r().redact_bytes(&text);
            let (visible, _) = strip_escapes(&out);
            let visible = String::from_utf8_lossy(&visible).into_owned();
            for w in key.as_bytes().windows(8).skip(3) {
                let w = String::from_utf8_lossy(w);
                proptest::prop_assert!(!visible.contains(&*w), "{} in {:?}", w, visible);
            }
            proptest::prop_assert!(visible.contains("[REDACTED]"));
        }
    }

    #[test]
    fn text_without_secrets_is_unchanged() {
        let text = b"\x1b[1mhello\x1b[0m sk-short\n\xff\xfe";
        assert_eq!(r().redact_bytes(text), text.to_vec());
    }

    #[test]
    fn json_strings_anywhere() {
        let mut v = serde_json::json!({
            "env": {"OPENAI_API_KEY": "sk-abcdefghijklmnopqrstuvwx1234"},
            "list": ["ok", "token xoxb-1234567890-abcdefghij"],
            "n": 3
        });
        r().redact_json(&mut v);
        assert_eq!(v["env"]["OPENAI_API_KEY"], "[REDACTED]");
        assert_eq!(v["list"][1], "token [REDACTED]");
        assert_eq!(v["n"], 3);
    }
}
