//! Where everything lives in the one JetStream stream: subject names, the escaping of
//! names into subject tokens, and the headers the backend writes.
//!
//! Every subject starts with the root `evh.<prefix>` and the stream is `EVHOST_<prefix>`
//! over `evh.<prefix>.>`, so several installations share a server or cluster without
//! seeing each other. A consumer commit may touch any of these subjects, and an atomic
//! batch spans one stream only: that is why there is one stream, not one per topic.

use sha2::{Digest, Sha256};

use crate::log::LogError;

/// The event's offset in its partition (decimal).
pub(super) const OFFSET: &str = "Evh-Offset";
/// The log-clock time of the append, in ms since the epoch (retention and dedupe).
pub(super) const APPEND_MS: &str = "Evh-Ms";
/// The event's size as retention counts it (`event_record_len`).
pub(super) const SIZE: &str = "Evh-Size";
/// The partition's bytes appended up to and including this message (so a partition's
/// stored bytes are the last message's total minus what retention deleted before the
/// first one).
pub(super) const TOTAL: &str = "Evh-Total";
/// On a partition subject: not an event but the partition's end, kept by retention when it
/// deletes every event (the next offset survives). On state, attempt and dead-letter
/// subjects: the entry is deleted (a tombstone).
pub(super) const MARK: &str = "Evh-Mark";
/// On a dedupe marker: the partition the id was appended to.
pub(super) const PARTITION: &str = "Evh-Partition";
/// On a stream subject: the event's version in its stream.
pub(super) const VERSION: &str = "Evh-Version";

/// The escaping of a name into one subject token, reversible: `s<name>` when the name is
/// non-empty and only `[A-Za-z0-9_-]`, else `x<hex of its UTF-8>` (NATS tokens may not
/// contain `.`, `*`, `>` or whitespace, nor be empty).
pub(super) fn token(name: &str) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        format!("s{name}")
    } else {
        format!("x{}", hex::encode(name.as_bytes()))
    }
}

/// The name behind a [`token`].
pub(super) fn untoken(token: &str) -> Result<String, LogError> {
    let bad = || LogError::Corrupt(format!("subject token `{token}` is not an escaped name"));
    match token.split_at_checked(1) {
        Some(("s", name)) if !name.is_empty() => Ok(name.to_owned()),
        Some(("x", hexed)) => hex::decode(hexed)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// An event id as a dedupe subject token: escaped when short, else `h<sha256>` (ids are
/// only looked up, never listed, so the hash need not be reversible).
fn id_token(id: &str) -> String {
    if id.len() <= 64 {
        token(id)
    } else {
        format!("h{}", hex::encode(Sha256::digest(id.as_bytes())))
    }
}

/// The subjects of one installation (`evh.<prefix>`).
#[derive(Debug, Clone)]
pub(super) struct Layout {
    root: String,
    stream: String,
}

impl Layout {
    /// `prefix` names the installation: 1 to 32 of `[A-Za-z0-9_-]`.
    pub(super) fn new(prefix: &str) -> Result<Self, LogError> {
        if prefix.is_empty()
            || prefix.len() > 32
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(LogError::Invalid(format!(
                "a NATS name prefix is 1 to 32 of [A-Za-z0-9_-], not {prefix:?}"
            )));
        }
        Ok(Self {
            root: format!("evh.{prefix}"),
            stream: format!("EVHOST_{prefix}"),
        })
    }

    pub(super) fn stream_name(&self) -> &str {
        &self.stream
    }

    /// What the stream holds: everything under the root.
    pub(super) fn all(&self) -> String {
        format!("{}.>", self.root)
    }

    /// Partition subjects, which the stream republishes (headers only) once stored...
    pub(super) fn all_events(&self) -> String {
        format!("{}.ev.>", self.root)
    }

    /// ...under this root, outside the stream: what watchers of every process listen to.
    pub(super) fn all_events_stored(&self) -> String {
        format!("{}.stored.ev.>", self.root.replacen("evh.", "evhr.", 1))
    }

    /// Where a partition's stored events are announced (see [`Layout::all_events_stored`]).
    pub(super) fn events_stored(&self, topic: &str, partition: u32) -> String {
        format!(
            "{}.stored.ev.{}.{partition}",
            self.root.replacen("evh.", "evhr.", 1),
            token(topic)
        )
    }

    /// A topic's configuration (the last message wins).
    pub(super) fn topic(&self, topic: &str) -> String {
        format!("{}.topic.{}", self.root, token(topic))
    }

    pub(super) fn topics(&self) -> String {
        format!("{}.topic.*", self.root)
    }

    /// The name out of a [`Layout::topic`] subject.
    pub(super) fn topic_of(&self, subject: &str) -> Result<String, LogError> {
        self.last_token(subject)
    }

    /// A partition's events, in offset order.
    pub(super) fn events(&self, topic: &str, partition: u32) -> String {
        format!("{}.ev.{}.{partition}", self.root, token(topic))
    }

    /// The dedupe marker of an event id in a topic.
    pub(super) fn dedupe(&self, topic: &str, id: &str) -> String {
        format!("{}.id.{}.{}", self.root, token(topic), id_token(id))
    }

    /// Every dedupe marker of a topic.
    pub(super) fn dedupes(&self, topic: &str) -> String {
        format!("{}.id.{}.*", self.root, token(topic))
    }

    /// An event-sourcing stream's entries, in version order.
    pub(super) fn stream(&self, stream: &str) -> String {
        format!("{}.stream.{}", self.root, token(stream))
    }

    /// A group's committed offset in a partition.
    pub(super) fn offset(&self, group: &str, topic: &str, partition: u32) -> String {
        format!(
            "{}.off.{}.{}.{partition}",
            self.root,
            token(group),
            token(topic)
        )
    }

    /// Every group's offset in a partition.
    pub(super) fn offsets_of(&self, topic: &str, partition: u32) -> String {
        format!("{}.off.*.{}.{partition}", self.root, token(topic))
    }

    pub(super) fn lease(&self, key: &crate::log::LeaseKey) -> String {
        format!(
            "{}.lease.{}.{}.{}",
            self.root,
            token(&key.group),
            token(&key.topic),
            key.partition
        )
    }

    pub(super) fn leases(&self) -> String {
        format!("{}.lease.>", self.root)
    }

    /// The lease key a lease subject names.
    pub(super) fn lease_key(&self, subject: &str) -> Result<crate::log::LeaseKey, LogError> {
        let bad = || LogError::Corrupt(format!("`{subject}` is not a lease subject"));
        let rest = subject
            .strip_prefix(&format!("{}.lease.", self.root))
            .ok_or_else(bad)?;
        let mut parts = rest.split('.');
        let (Some(group), Some(topic), Some(partition), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(crate::log::LeaseKey {
            group: untoken(group)?,
            topic: untoken(topic)?,
            partition: partition.parse().map_err(|_| bad())?,
        })
    }

    pub(super) fn member(&self, id: &str) -> String {
        format!("{}.member.{}", self.root, token(id))
    }

    pub(super) fn members(&self) -> String {
        format!("{}.member.*", self.root)
    }

    pub(super) fn state(&self, namespace: &str, key: &str) -> String {
        format!("{}.state.{}.{}", self.root, token(namespace), token(key))
    }

    pub(super) fn state_namespace(&self, namespace: &str) -> String {
        format!("{}.state.{}.*", self.root, token(namespace))
    }

    /// The key out of a [`Layout::state`] subject.
    pub(super) fn state_key_of(&self, subject: &str) -> Result<String, LogError> {
        self.last_token(subject)
    }

    pub(super) fn attempts(&self, group: &str, topic: &str, partition: u32, offset: u64) -> String {
        format!(
            "{}.att.{}.{}.{partition}.{offset}",
            self.root,
            token(group),
            token(topic)
        )
    }

    pub(super) fn dead_letter(&self, id: u64) -> String {
        format!("{}.dl.{id}", self.root)
    }

    pub(super) fn dead_letters(&self) -> String {
        format!("{}.dl.*", self.root)
    }

    /// The id out of a [`Layout::dead_letter`] subject.
    pub(super) fn dead_letter_id_of(&self, subject: &str) -> Result<u64, LogError> {
        let last = subject.rsplit('.').next().unwrap_or_default();
        last.parse()
            .map_err(|_| LogError::Corrupt(format!("`{subject}` is not a dead letter subject")))
    }

    /// Every subject whose last message is its whole value (retention compacts them).
    pub(super) fn last_value_subjects(&self) -> [String; 6] {
        ["topic", "off", "state", "att", "dl", "meta"].map(|kind| format!("{}.{kind}.>", self.root))
    }

    /// The next dead-letter id (the last message holds it).
    pub(super) fn dead_letter_counter(&self) -> String {
        format!("{}.meta.dlnext", self.root)
    }

    fn last_token(&self, subject: &str) -> Result<String, LogError> {
        untoken(subject.rsplit('.').next().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_escape_reversibly_into_one_token() {
        for name in ["orders", "a.b", "", "x*y>z", "with space", "ünï", "s", "x"] {
            let t = token(name);
            assert!(
                !t.is_empty() && !t.contains(['.', '*', '>', ' ']),
                "{name:?} → {t:?}"
            );
            assert_eq!(untoken(&t).unwrap(), name);
        }
        assert_eq!(token("orders"), "sorders");
        assert_eq!(token("a.b"), "x612e62");
        assert!(untoken("q12").is_err());
        assert!(untoken("xzz").is_err());
        assert_ne!(id_token(&"a".repeat(65)), id_token(&"a".repeat(66)));
    }

    #[test]
    fn subjects_stay_under_the_installation_root() {
        let layout = Layout::new("test").unwrap();
        assert_eq!(layout.stream_name(), "EVHOST_test");
        assert_eq!(layout.events("a.b", 3), "evh.test.ev.x612e62.3");
        assert_eq!(layout.topic_of(&layout.topic("a.b")).unwrap(), "a.b");
        assert_eq!(
            layout.state_key_of(&layout.state("ns", "k/1")).unwrap(),
            "k/1"
        );
        assert_eq!(
            layout.dead_letter_id_of(&layout.dead_letter(42)).unwrap(),
            42
        );
        assert_eq!(
            layout.events_stored("a.b", 3),
            "evhr.test.stored.ev.x612e62.3"
        );
        assert!(!layout.all_events_stored().starts_with("evh."));
        assert!(Layout::new("has.dot").is_err());
        assert!(Layout::new("").is_err());
    }
}
