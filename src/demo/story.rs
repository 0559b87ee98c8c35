//! The demo's storyline, `assets/demo/story.yaml` (embedded): the layout the demo runs,
//! the first commit of its throwaway repository, each agent's screenplay, and the events
//! the story must produce, in order. The file's own comments say how to read it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use crate::agent_sim::script::{self, Script};
use crate::layout::{Duration, Layout};

/// The story shipped in the binary.
pub const STORY: &str = include_str!("../../assets/demo/story.yaml");
const STORY_FILE: &str = "assets/demo/story.yaml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Story {
    /// How long the whole story may take at speed 1.
    pub timeout: Duration,
    /// The layout, without what only the demo knows (root, commands).
    pub layout: Mapping,
    /// Path → content of the repository's first commit.
    pub project: BTreeMap<String, String>,
    /// Each agent's part.
    pub agents: BTreeMap<String, Script>,
    pub expect: Vec<Expect>,
}

/// One event the story must produce: its kind, and fields that must be equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    pub kind: String,
    /// Field → value; `agent` among them when given.
    pub fields: BTreeMap<String, String>,
}

impl<'de> Deserialize<'de> for Expect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut fields = BTreeMap::<String, String>::deserialize(d)?;
        let kind = fields
            .remove("kind")
            .ok_or_else(|| serde::de::Error::missing_field("kind"))?;
        Ok(Expect { kind, fields })
    }
}

impl Expect {
    /// Whether the journal event `ev` is this one.
    pub fn matches(&self, ev: &serde_json::Value) -> bool {
        ev["kind"].as_str() == Some(self.kind.as_str())
            && self.fields.iter().all(|(k, v)| match &ev[k.as_str()] {
                serde_json::Value::String(s) => s == v,
                serde_json::Value::Null => false,
                other => serde_json::to_string(other).is_ok_and(|o| o == *v),
            })
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.kind)?;
        for (k, v) in &self.fields {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

/// Keys of the layout whose durations pace the story, divided by `--speed`.
const PACING_KEYS: &[&str] = &[
    "tick",
    "resources",
    "maintenance",
    "window",
    "min_uptime",
    "initial",
    "max",
    "stall_after",
    "interval",
    "timeout",
];

/// Where the demo's files are, for the layout it writes.
pub struct Paths<'a> {
    pub repo: &'a Path,
    pub scripts: &'a Path,
    pub exe: &'a Path,
}

impl Story {
    pub fn parse(text: &str, file: &str) -> Result<Story> {
        let story: Story = serde_yaml::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map_or_else(String::new, |l| format!("{}:{}: ", l.line(), l.column()));
            anyhow::anyhow!("{file}:{at}{e}")
        })?;
        if story.expect.is_empty() {
            bail!("{file}: `expect` names no event");
        }
        Ok(story)
    }

    /// The story shipped in the binary.
    pub fn builtin() -> Result<Story> {
        Story::parse(STORY, STORY_FILE)
    }

    /// The story's timeout at `speed`.
    pub fn timeout(&self, speed: f64) -> std::time::Duration {
        script::divide(self.timeout, speed).0
    }

    /// The layout file the demo runs: the story's layout paced for `speed`, with the
    /// workspace's root and each agent's command.
    pub fn layout_text(&self, speed: f64, paths: &Paths<'_>) -> Result<String> {
        let mut layout = Value::Mapping(self.layout.clone());
        pace(&mut layout, speed);
        let map = layout
            .as_mapping_mut()
            .context("the story's layout is a mapping")?;
        let repo = paths.repo.to_string_lossy().into_owned();
        map.insert("root".into(), repo.clone().into());
        if let Some(Value::Mapping(q)) = map.get_mut("quality") {
            q.insert("repo".into(), repo.into());
        }
        let Some(Value::Sequence(agents)) = map.get_mut("agents") else {
            bail!("{STORY_FILE}: layout.agents is not a list");
        };
        let exe = crate::tmux::shell_quote(&paths.exe.to_string_lossy());
        for agent in agents.iter_mut() {
            let Some(a) = agent.as_mapping_mut() else {
                bail!("{STORY_FILE}: an agent of layout.agents is not a mapping");
            };
            let Some(name) = a.get("name").and_then(Value::as_str).map(str::to_owned) else {
                bail!("{STORY_FILE}: an agent of layout.agents has no name");
            };
            if !self.agents.contains_key(&name) {
                bail!("{STORY_FILE}: agent {name} of the layout has no part in `agents`");
            }
            let script = paths.scripts.join(format!("{name}.yaml"));
            let command = format!(
                "{exe} agent-sim --script {}",
                crate::tmux::shell_quote(&script.to_string_lossy())
            );
            a.insert("command".into(), command.into());
        }
        if let Some(extra) = self.agents.keys().find(|n| {
            !agents
                .iter()
                .any(|a| a["name"].as_str() == Some(n.as_str()))
        }) {
            bail!("{STORY_FILE}: `agents` has a part for {extra}, who is not in the layout");
        }
        let text = serde_yaml::to_string(&layout).context("writing the demo's layout")?;
        Ok(format!(
            "# Written by `orch demo` from {STORY_FILE} (paced for --speed {speed}).\n{text}"
        ))
    }

    /// The screenplay of `agent` at `speed`, drawing the screens of its profile in `layout`.
    pub fn script_for(&self, agent: &str, layout: &Layout, speed: f64) -> Option<Script> {
        let part = self.agents.get(agent)?;
        let mut script = part.faster(speed);
        if script.profile.is_none() {
            script.profile = layout
                .agents
                .iter()
                .find(|a| a.name.as_str() == agent)
                .map(|a| a.profile);
        }
        Some(script)
    }
}

/// Divides the durations under [`PACING_KEYS`] by `speed`, wherever they are.
fn pace(v: &mut Value, speed: f64) {
    match v {
        Value::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                let pacing = k.as_str().is_some_and(|k| PACING_KEYS.contains(&k));
                if pacing
                    && let Value::String(s) = v
                    && let Ok(d) = s.parse::<Duration>()
                {
                    *s = script::divide(d, speed).to_string();
                } else {
                    pace(v, speed);
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(|v| pace(v, speed)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(d: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        (d.join("repo"), d.join("scripts"))
    }

    #[test]
    fn the_builtin_story_makes_a_valid_layout_with_a_part_for_every_agent() {
        let story = Story::builtin().expect("the story parses");
        let d = tempfile::tempdir().expect("tmp");
        let (repo, scripts) = paths(d.path());
        std::fs::create_dir(&repo).expect("mkdir");
        for speed in [1.0, 4.0] {
            let text = story
                .layout_text(
                    speed,
                    &Paths {
                        repo: &repo,
                        scripts: &scripts,
                        exe: Path::new("/usr/bin/orch"),
                    },
                )
                .expect("layout");
            let layout = crate::layout::parse(&text, "demo.yaml", d.path())
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(layout.agents.len(), 9);
            assert_eq!(layout.root, repo);
            for a in &layout.agents {
                let cmd = a.command.as_deref().expect("a command");
                assert!(cmd.contains("agent-sim --script"), "{cmd}");
                assert!(cmd.contains(&format!("{}.yaml", a.name)), "{cmd}");
                let script = story
                    .script_for(a.name.as_str(), &layout, speed)
                    .expect("a part");
                assert_eq!(script.profile, Some(a.profile));
            }
            let q = layout.quality.as_ref().expect("a quality gate");
            assert_eq!(q.repo, repo);
            assert_eq!(
                layout.monitor.tick,
                Duration::from_millis((500.0 / speed) as u64)
            );
        }
    }

    #[test]
    fn only_pacing_durations_are_divided() {
        let mut v: Value = serde_yaml::from_str(
            "window: agents\nmonitor: { tick: 1s, leak: { window: 8s, min_growth: 20% } }\ndefaults: { restart: { backoff: { max: 2s } }, limits: { memory: 4GiB } }\nagents: [ { name: a, stall_after: 6s } ]\n",
        )
        .expect("yaml");
        pace(&mut v, 2.0);
        assert_eq!(v["window"].as_str(), Some("agents"));
        assert_eq!(v["monitor"]["tick"].as_str(), Some("500ms"));
        assert_eq!(v["monitor"]["leak"]["window"].as_str(), Some("4s"));
        assert_eq!(v["monitor"]["leak"]["min_growth"].as_str(), Some("20%"));
        assert_eq!(
            v["defaults"]["restart"]["backoff"]["max"].as_str(),
            Some("1s")
        );
        assert_eq!(v["defaults"]["limits"]["memory"].as_str(), Some("4GiB"));
        assert_eq!(v["agents"][0]["stall_after"].as_str(), Some("3s"));
    }

    #[test]
    fn expectations_match_kind_and_fields() {
        let e: Expect =
            serde_yaml::from_str("{ kind: agent_fatal, agent: worker2 }").expect("parses");
        assert!(e.matches(&serde_json::json!({"kind": "agent_fatal", "agent": "worker2"})));
        assert!(!e.matches(&serde_json::json!({"kind": "agent_fatal", "agent": "worker1"})));
        assert!(!e.matches(&serde_json::json!({"kind": "agent_fatal"})));
        let n: Expect = serde_yaml::from_str("{ kind: k, count: 3 }").expect("parses");
        assert!(n.matches(&serde_json::json!({"kind": "k", "count": 3})));
        assert_eq!(n.to_string(), "k count=3");
        assert!(serde_yaml::from_str::<Expect>("{ agent: a }").is_err());
    }
}
