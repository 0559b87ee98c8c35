//! Messages between agents (SPEC §5.4): sending one to a target ([`send`], what `orch
//! send` and the dashboard call), who may message whom ([`acl`]), a persistent per-agent
//! queue ([`queue`]), confirmed delivery into a pane ([`deliver`], and to many panes at
//! once, [`broadcast`]) and a hash-chained audit log of everything that happened to a
//! message ([`audit`]); messages to a restored agent also wait until its pane shows more
//! than its replayed history ([`replay`]).
//!
//! `acl`, the queue ordering, the confirmation matching and the replay comparison are
//! pure; only `deliver` and `drain` run tmux (through [`crate::tmux::Tmux`]) and only
//! `queue`, `audit` and `replay` (its marker file) touch files.

pub mod acl;
pub mod audit;
pub mod broadcast;
pub mod deliver;
pub mod drain;
pub mod queue;
pub mod replay;
pub mod send;

/// File names inside `<state-dir>/<session>/`.
pub const QUEUE_DIR: &str = "queue";
pub const AUDIT_FILE: &str = "audit.jsonl";

/// Queues `agent`'s role instructions (its `instructions:` file) as a high-priority
/// message from `orch`, delivered once the agent looks ready. Does nothing for an agent
/// without instructions.
pub fn queue_instructions(
    session_dir: &std::path::Path,
    agent: &crate::layout::Agent,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let Some(path) = &agent.instructions else {
        return Ok(());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let text = crate::tmux::paste_safe(&text);
    let queue = queue::Queue::new(session_dir);
    let how = queue::Delivery {
        enter: true,
        when_ready: true,
        ready_within: None,
    };
    queue.push_with(
        "orch",
        agent.name.as_str(),
        queue::Priority::High,
        text.trim_end(),
        how,
    )?;
    Ok(())
}
