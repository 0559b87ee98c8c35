//! `cargo run --release --example dashboard_picture [FILE]`: the picture of the dashboard in
//! the README (`assets/dashboard.svg` by default), taken from a real run of `orch demo`.
//!
//! The demo runs in a pane of a private tmux server (its own socket, `TMUX_TMPDIR` and
//! `TMPDIR`, so nothing of the user's is touched) at 160×45; once the story's rollback
//! waits for the human, the pane is captured with its colours (`capture-pane -e`), read
//! with ansi-to-tui, and written as SVG: one text run per span, a rectangle behind every
//! span with a background. Then `q` ends the demo, which removes what it made.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ansi_to_tui::IntoText;
use ratatui::style::{Color, Modifier};

const COLS: u16 = 160;
const ROWS: u16 = 45;
const CELL_W: f64 = 8.4;
const CELL_H: f64 = 18.0;

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "assets/dashboard.svg".to_owned());
    let tmux_tmpdir = tempfile::tempdir().expect("a temp dir");
    let tmpdir = tempfile::tempdir().expect("a temp dir");
    let socket = format!("orch-picture-{}", std::process::id());
    let tmux = |args: &[&str]| -> String {
        let out = Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .env("TMUX_TMPDIR", tmux_tmpdir.path())
            .env_remove("TMUX")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let orch = std::env::var("ORCH_BIN").unwrap_or_else(|_| {
        let exe = std::env::current_exe().expect("this example's path");
        // target/<profile>/examples/dashboard_picture → target/<profile>/orch
        exe.parent()
            .and_then(|p| p.parent())
            .map(|p| p.join("orch").display().to_string())
            .expect("the orch binary beside the example")
    });
    let command = format!(
        "TMPDIR='{}' NO_COLOR= '{orch}' demo",
        tmpdir.path().display()
    );
    tmux(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        "picture",
        "-x",
        &COLS.to_string(),
        "-y",
        &ROWS.to_string(),
        "-e",
        "TERM=xterm-256color",
        &command,
    ]);
    // The moment worth a picture: the rollback waits, and the story's faults are on the
    // cards.
    let deadline = Instant::now() + Duration::from_secs(120);
    let screen = loop {
        let plain = tmux(&["capture-pane", "-p", "-t", "picture"]);
        if plain.contains("y approve") && plain.contains("fatal") && plain.contains("waiting") {
            std::thread::sleep(Duration::from_millis(500));
            break tmux(&["capture-pane", "-e", "-p", "-t", "picture"]);
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not reach its rollback within 120 s:\n{plain}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    tmux(&["send-keys", "-t", "picture", "q"]);
    std::thread::sleep(Duration::from_secs(2));
    tmux(&["kill-server"]);

    let text = screen.into_text().expect("tmux's capture is ANSI text");
    std::fs::write(&out, svg(&text)).unwrap_or_else(|e| panic!("writing {out}: {e}"));
    println!("{out}: the dashboard of a real `orch demo` run, {COLS}×{ROWS}");
}

fn svg(text: &ratatui::text::Text<'_>) -> String {
    let (w, h) = (
        f64::from(COLS) * CELL_W + 24.0,
        f64::from(ROWS) * CELL_H + 24.0,
    );
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="'DejaVu Sans Mono', Menlo, Consolas, monospace" font-size="14">"##
    );
    let _ = writeln!(
        s,
        r##"<rect width="100%" height="100%" rx="8" fill="#1e1e2e"/>"##
    );
    for (row, line) in text.lines.iter().take(ROWS as usize).enumerate() {
        let y = 12.0 + row as f64 * CELL_H;
        let mut col = 0usize;
        for span in &line.spans {
            let width = span.width();
            let x = 12.0 + col as f64 * CELL_W;
            let style = span.style.patch(line.style);
            let reversed = style.add_modifier.contains(Modifier::REVERSED);
            let (fg, bg) = if reversed {
                (
                    style.bg.or(Some(Color::Black)),
                    style.fg.or(Some(Color::Gray)),
                )
            } else {
                (style.fg, style.bg)
            };
            if let Some(bg) = bg.and_then(hex) {
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{CELL_H}" fill="{bg}"/>"#,
                    width as f64 * CELL_W
                );
            }
            let content = span.content.trim_end();
            if !content.is_empty() {
                let fill = fg.and_then(hex).unwrap_or_else(|| "#cdd6f4".to_owned());
                let bold = if style.add_modifier.contains(Modifier::BOLD) {
                    r#" font-weight="bold""#
                } else {
                    ""
                };
                let _ = writeln!(
                    s,
                    r#"<text x="{x:.1}" y="{:.1}" fill="{fill}"{bold} xml:space="preserve" textLength="{:.1}" lengthAdjust="spacingAndGlyphs">{}</text>"#,
                    y + CELL_H * 0.75,
                    unicode_width(content) as f64 * CELL_W,
                    escape(content)
                );
            }
            col += width;
        }
    }
    s.push_str("</svg>\n");
    s
}

fn unicode_width(s: &str) -> usize {
    ratatui::text::Span::raw(s).width()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A terminal colour as the picture's palette shows it.
fn hex(c: Color) -> Option<String> {
    const ANSI: [&str; 16] = [
        "#45475a", "#f38ba8", "#a6e3a1", "#f9e2af", "#89b4fa", "#f5c2e7", "#94e2d5", "#bac2de",
        "#585b70", "#f38ba8", "#a6e3a1", "#f9e2af", "#89b4fa", "#f5c2e7", "#94e2d5", "#a6adc8",
    ];
    let i = match c {
        Color::Reset => return None,
        Color::Black => 0,
        Color::Red => 1,
        Color::Green => 2,
        Color::Yellow => 3,
        Color::Blue => 4,
        Color::Magenta => 5,
        Color::Cyan => 6,
        Color::Gray => 7,
        Color::DarkGray => 8,
        Color::LightRed => 9,
        Color::LightGreen => 10,
        Color::LightYellow => 11,
        Color::LightBlue => 12,
        Color::LightMagenta => 13,
        Color::LightCyan => 14,
        Color::White => 15,
        Color::Rgb(r, g, b) => return Some(format!("#{r:02x}{g:02x}{b:02x}")),
        Color::Indexed(n) if n < 16 => n,
        Color::Indexed(n) if n >= 232 => {
            let v = 8 + (n - 232) * 10;
            return Some(format!("#{v:02x}{v:02x}{v:02x}"));
        }
        Color::Indexed(n) => {
            let n = n - 16;
            let level = |x: u8| if x == 0 { 0 } else { 55 + x * 40 };
            return Some(format!(
                "#{:02x}{:02x}{:02x}",
                level(n / 36),
                level((n / 6) % 6),
                level(n % 6)
            ));
        }
    };
    Some(ANSI[i as usize].to_owned())
}
