//! Layouts shipped inside the binary, so `orch layout up` works on a fresh machine.

/// A layout embedded in the binary from `layouts/`.
#[derive(Debug)]
pub struct BuiltinLayout {
    pub name: &'static str,
    pub description: &'static str,
    pub text: &'static str,
}

pub const BUILTIN: &[BuiltinLayout] = &[
    BuiltinLayout {
        name: "org9",
        description: "president, 2 bosses, 6 workers in a 3x3 grid; each pane runs your shell",
        text: include_str!("../../layouts/org9.yaml"),
    },
    BuiltinLayout {
        name: "org5",
        description: "president, 1 boss, 3 workers; each pane runs your shell",
        text: include_str!("../../layouts/org5.yaml"),
    },
    BuiltinLayout {
        name: "org9-claude",
        description: "org9 running Claude Code in every pane, workers in their own git worktrees",
        text: include_str!("../../layouts/org9-claude.yaml"),
    },
    BuiltinLayout {
        name: "org9-codex",
        description: "org9 running Codex CLI in every pane, workers in their own git worktrees",
        text: include_str!("../../layouts/org9-codex.yaml"),
    },
];

pub fn find(name: &str) -> Option<&'static BuiltinLayout> {
    BUILTIN.iter().find(|b| b.name == name)
}
