//! Who may message whom (`messaging.acl`). Pure.
//!
//! `hierarchy`: PRESIDENT → BOSS → WORKER. A role sends to any role below it and replies
//! only to the role one level above it; peers and custom roles (outside the three levels)
//! cannot message each other. `open`: anyone may message anyone. The user, outside any
//! pane, may always message anyone.

use crate::layout::Acl;

/// Who is sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender<'a> {
    /// A person at a terminal outside orch's panes.
    User,
    /// An agent, by name and role.
    Agent { name: &'a str, role: &'a str },
}

impl Sender<'_> {
    /// `user`, or the agent's name: the `from` of a message.
    pub fn name(&self) -> &str {
        match self {
            Sender::User => "user",
            Sender::Agent { name, .. } => name,
        }
    }
}

/// Why a message is refused: one sentence naming the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// Level in the hierarchy: 0 PRESIDENT, 1 BOSS, 2 WORKER; `None` for a custom role.
fn level(role: &str) -> Option<u8> {
    match role {
        "PRESIDENT" => Some(0),
        "BOSS" => Some(1),
        "WORKER" => Some(2),
        _ => None,
    }
}

/// May `sender` message the agent `target` whose role is `target_role`?
pub fn check(acl: Acl, sender: Sender<'_>, target: &str, target_role: &str) -> Result<(), Refusal> {
    let (name, role) = match sender {
        Sender::User => return Ok(()),
        Sender::Agent { name, role } => (name, role),
    };
    if acl == Acl::Open {
        return Ok(());
    }
    let refuse = |why: &str| {
        Err(Refusal(format!(
            "{role} {name} may not message {target_role} {target}: under messaging.acl hierarchy {why} (set `messaging: {{ acl: open }}` in the layout to allow it)"
        )))
    };
    match (level(role), level(target_role)) {
        (Some(from), Some(to)) if to > from => Ok(()),
        (Some(from), Some(to)) if to + 1 == from => Ok(()),
        (Some(from), Some(to)) if to == from => {
            refuse("agents of the same role do not message each other")
        }
        (Some(_), Some(_)) => refuse("an agent replies only one level up"),
        _ => refuse("only PRESIDENT, BOSS and WORKER have a place in the hierarchy"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent<'a>(name: &'a str, role: &'a str) -> Sender<'a> {
        Sender::Agent { name, role }
    }

    #[test]
    fn hierarchy_sends_down_and_replies_one_level_up() {
        let h = Acl::Hierarchy;
        assert!(check(h, agent("p", "PRESIDENT"), "b", "BOSS").is_ok());
        assert!(check(h, agent("p", "PRESIDENT"), "w", "WORKER").is_ok());
        assert!(check(h, agent("b", "BOSS"), "w", "WORKER").is_ok());
        assert!(check(h, agent("w", "WORKER"), "b", "BOSS").is_ok());
        assert!(check(h, agent("b", "BOSS"), "p", "PRESIDENT").is_ok());
        let up_two = check(h, agent("worker1", "WORKER"), "president", "PRESIDENT");
        let msg = up_two.expect_err("refused").0;
        assert!(
            msg.contains("WORKER worker1 may not message PRESIDENT president"),
            "{msg}"
        );
        assert!(msg.contains("one level up"), "{msg}");
        assert!(check(h, agent("w1", "WORKER"), "w2", "WORKER").is_err());
        assert!(check(h, agent("b1", "BOSS"), "b2", "BOSS").is_err());
        assert!(check(h, agent("q", "QA"), "w", "WORKER").is_err());
        assert!(check(h, agent("w", "WORKER"), "q", "QA").is_err());
    }

    #[test]
    fn open_allows_all_and_the_user_may_message_anyone() {
        assert!(check(Acl::Open, agent("w", "WORKER"), "p", "PRESIDENT").is_ok());
        assert!(check(Acl::Open, agent("q", "QA"), "w2", "WORKER").is_ok());
        for role in ["PRESIDENT", "BOSS", "WORKER", "QA"] {
            assert!(check(Acl::Hierarchy, Sender::User, "x", role).is_ok());
        }
        assert_eq!(Sender::User.name(), "user");
        assert_eq!(agent("boss1", "BOSS").name(), "boss1");
    }
}
