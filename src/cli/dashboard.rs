//! `orch` / `orch dashboard`.

use std::process::ExitCode;

use anyhow::Result;

use super::{BadInput, Context};

pub(super) fn run(ctx: &Context) -> Result<ExitCode> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        return Err(BadInput(
            "the dashboard needs a terminal; without one, use `orch layout up`, `orch status` and `orch events --follow`".into(),
        )
        .into());
    }
    let layout = ctx.layout()?;
    let _log = ctx.log_to(&layout)?;
    let layout_file = match ctx.layout_source()? {
        crate::layout::LayoutSource::File(path) => Some(path),
        crate::layout::LayoutSource::Builtin(_) => None,
    };
    crate::tui::run(crate::tui::Options {
        layout,
        layout_file,
        tmux: ctx.tmux(),
        state: ctx.state()?,
        spawn: ctx.spawn()?,
    })?;
    Ok(ExitCode::SUCCESS)
}
