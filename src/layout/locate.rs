//! Finds the line and column of a node in a YAML document, for errors that are only known
//! after the whole layout has been read (a duplicate name, a worktree outside a git repo).
//!
//! It asks serde_yaml itself: a probe walks the document down the given path and fails at
//! the target node, and serde_yaml stamps that failure with the node's position. Positions
//! therefore agree exactly with the ones serde_yaml reports for parse errors.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a path into the document: a mapping key or a sequence index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

const MARK: &str = "\u{1}orch-locate-probe\u{1}";

/// Line and column (both 1-based) of the node at `path`, or of the deepest existing
/// ancestor when the path ends early (a missing key points at its parent mapping).
pub fn locate(text: &str, path: &[Seg<'_>]) -> (usize, usize) {
    let probe = Probe { path };
    match probe.deserialize(serde_yaml::Deserializer::from_str(text)) {
        Err(err) if err.to_string().contains(MARK) => err
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1)),
        _ => (1, 1),
    }
}

struct Probe<'p, 'a> {
    path: &'p [Seg<'a>],
}

impl<'de> DeserializeSeed<'de> for Probe<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Probe<'_, '_> {
    /// A scalar is the target, or the path continues below it; either way it is the
    /// nearest thing to point at.
    fn hit<E: de::Error>(&self) -> Result<(), E> {
        Err(E::custom(MARK))
    }
}

impl<'de> Visitor<'de> for Probe<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(wanted), rest)) = self.path.split_first() else {
            return Err(de::Error::custom(MARK));
        };
        while let Some(key) = map.next_key::<KeyName>()? {
            if key.0.as_deref() == Some(*wanted) {
                return map.next_value_seed(Probe { path: rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        // The key is absent: the mapping itself is the best place to point at.
        Err(de::Error::custom(MARK))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(wanted), rest)) = self.path.split_first() else {
            return Err(de::Error::custom(MARK));
        };
        let mut index = 0;
        while index < *wanted {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::custom(MARK));
            }
            index += 1;
        }
        match seq.next_element_seed(Probe { path: rest })? {
            Some(()) => Ok(()),
            None => Err(de::Error::custom(MARK)),
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.hit()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.hit()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.hit()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.hit()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.hit()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.hit()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.hit()
    }
}

/// A mapping key read as a string when it is one; other keys are skipped.
struct KeyName(Option<String>);

impl<'de> de::Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyName, E> {
                Ok(KeyName(Some(v.to_owned())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<KeyName, E> {
                Ok(KeyName(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<KeyName, E> {
                Ok(KeyName(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<KeyName, E> {
                Ok(KeyName(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<KeyName, E> {
                Ok(KeyName(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyName, E> {
                Ok(KeyName(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<KeyName, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(KeyName(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<KeyName, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(KeyName(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "session: s\nagents:\n  - name: a\n    role: BOSS\n  - { name: b, role: WORKER }\nsnapshot:\n  keep: 3\n";

    #[test]
    fn finds_nodes() {
        assert_eq!(locate(DOC, &[Seg::Key("session")]), (1, 10));
        assert_eq!(
            locate(DOC, &[Seg::Key("agents"), Seg::Index(0), Seg::Key("role")]),
            (4, 11)
        );
        assert_eq!(
            locate(DOC, &[Seg::Key("agents"), Seg::Index(1), Seg::Key("name")]),
            (5, 13)
        );
        assert_eq!(
            locate(DOC, &[Seg::Key("snapshot"), Seg::Key("keep")]),
            (7, 9)
        );
    }

    #[test]
    fn missing_key_points_at_parent() {
        assert_eq!(
            locate(DOC, &[Seg::Key("snapshot"), Seg::Key("interval")]),
            (7, 3)
        );
    }
}
