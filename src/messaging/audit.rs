//! The audit log, `<session-dir>/audit.jsonl`: one JSON object a line for every send,
//! delivery, refusal and failure, hash-chained: each line's `prev` is the SHA-256 (hex) of
//! the previous line's bytes (without its newline), the first line's is 64 zeros. Changing,
//! removing or inserting any line but the last breaks the chain at the line after it.
//! Appends hold an flock on the file, so concurrent senders keep the chain intact.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::SystemTime;

use crate::digest::sha256_hex;
use anyhow::{Context, Result};
use rustix::fs::{FlockOperation, flock};
use serde_json::{Map, Value};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Appends one record (`kind` plus `fields`) to the chain at `path` and returns the line.
pub fn append(
    path: &Path,
    kind: &str,
    fields: Map<String, Value>,
    at: SystemTime,
) -> Result<String> {
    let mut file = crate::state::open_append(path)?;
    flock(&file, FlockOperation::LockExclusive)
        .with_context(|| format!("locking {}", path.display()))?;
    let prev = match last_line(&mut file).with_context(|| format!("reading {}", path.display()))? {
        Some(line) => sha256_hex(&line),
        None => GENESIS.to_owned(),
    };
    let mut obj = Map::new();
    obj.insert("prev".into(), Value::String(prev));
    obj.insert(
        "ts".into(),
        Value::String(humantime::format_rfc3339_millis(at).to_string()),
    );
    obj.insert("kind".into(), Value::String(kind.to_owned()));
    obj.extend(fields);
    let line = Value::Object(obj).to_string();
    file.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| file.sync_data())
        .with_context(|| format!("appending to {}", path.display()))?;
    Ok(line)
}

/// The bytes of the file's last line (without its newline), reading backwards from the end.
fn last_line(file: &mut File) -> std::io::Result<Option<Vec<u8>>> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let mut chunk = 4096u64;
    loop {
        let start = len.saturating_sub(chunk);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if let Some(i) = body.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(body[i + 1..].to_vec()));
        }
        if start == 0 {
            return Ok(Some(body.to_vec()));
        }
        chunk *= 4;
    }
}

/// Where and why a chain is broken. `line` counts from 1.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct BrokenAt {
    pub line: usize,
    pub reason: String,
}

/// Checks the whole chain; returns the number of lines. A missing file is an empty chain.
pub fn verify(path: &Path) -> Result<usize, BrokenAt> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(BrokenAt {
                line: 0,
                reason: format!("cannot read {}: {e}", path.display()),
            });
        }
    };
    verify_bytes(&bytes)
}

/// [`verify`] on the file's contents. Pure.
pub fn verify_bytes(bytes: &[u8]) -> Result<usize, BrokenAt> {
    if bytes.is_empty() {
        return Ok(0);
    }
    let Some(body) = bytes.strip_suffix(b"\n") else {
        let line = bytes.split(|&b| b == b'\n').count();
        return Err(BrokenAt {
            line,
            reason: "the last line is not terminated (a torn write or a truncated file)".into(),
        });
    };
    let mut expected = GENESIS.to_owned();
    let mut count = 0;
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        let broken = |reason: String| BrokenAt { line: n, reason };
        let value: Value =
            serde_json::from_slice(line).map_err(|e| broken(format!("not a JSON object ({e})")))?;
        let prev = value
            .get("prev")
            .and_then(Value::as_str)
            .ok_or_else(|| broken("no \"prev\" hash".into()))?;
        if prev != expected {
            let what = if n == 1 {
                "the first line's prev is not the genesis hash (lines were removed before it?)"
                    .to_owned()
            } else {
                format!(
                    "prev does not match the SHA-256 of line {} (line {} or this line was changed, or lines were inserted or removed)",
                    n - 1,
                    n - 1
                )
            };
            return Err(broken(what));
        }
        expected = sha256_hex(line);
        count = n;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(n: u64) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("n".into(), Value::from(n));
        m
    }

    #[test]
    fn chain_verifies_and_any_changed_byte_breaks_it() {
        let d = tempfile::tempdir().expect("tmp");
        let path = d.path().join("audit.jsonl");
        assert_eq!(verify(&path), Ok(0));
        for n in 0..5 {
            append(&path, "send", fields(n), SystemTime::UNIX_EPOCH).expect("append");
        }
        assert_eq!(verify(&path), Ok(5));
        let good = std::fs::read(&path).expect("read");
        let first: Value =
            serde_json::from_slice(good.split(|&b| b == b'\n').next().expect("line"))
                .expect("json");
        assert_eq!(first["prev"], GENESIS);
        assert_eq!(first["kind"], "send");
        // Every byte of every line but the last is covered by the chain.
        let last_start = good[..good.len() - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .expect("several lines")
            + 1;
        for i in 0..last_start {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            let err = verify_bytes(&bad).expect_err("tampering detected");
            assert!(err.line >= 1, "{err}");
        }
        // A changed field in line 2 is named at line 3.
        let text = String::from_utf8(good).expect("utf8");
        let bad = text.replacen("\"n\":1", "\"n\":7", 1);
        assert_eq!(verify_bytes(bad.as_bytes()).expect_err("broken").line, 3);
        let torn = &text.as_bytes()[..text.len() - 3];
        assert!(verify_bytes(torn).is_err());
    }

    #[test]
    fn long_lines_chain_through_the_backwards_reader() {
        let d = tempfile::tempdir().expect("tmp");
        let path = d.path().join("audit.jsonl");
        for n in 0..3 {
            let mut f = fields(n);
            f.insert("pad".into(), Value::String("x".repeat(20_000)));
            append(&path, "send", f, SystemTime::now()).expect("append");
        }
        assert_eq!(verify(&path), Ok(3));
    }
}
