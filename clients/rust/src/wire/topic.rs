//! Topics: what a message is published on, derived from its flow and key.
//!
//! The shape is DigitalPy's, so its users recognise it:
//!
//! ```text
//! flow~decorator~sender~context~action
//! ```
//!
//! A flow's results are published on `Flow~~~~done` (the key `??done`). The
//! topic is the first frame of every published message, so a subscriber can
//! filter by prefix: `Flow~` receives everything of one flow, `Flow~~~~done`
//! every result of that flow.

use std::fmt;

/// Characters allowed in names (of flows, services, subscribers) and in
/// every field of an action key: letters, digits, `_`, `-` and `.`. Keys
/// also take `^` (`zmanager::catalog::action_key::is_key_char`).
///
/// Excluded on purpose: the key's own separators (`?`, `@`), the topic
/// separator `~`, the INI delimiters (`=`, `:`, `;`, `#`), whitespace and
/// control characters.
pub fn is_field_char(ch: char) -> bool {
    ch.is_alphanumeric() || matches!(ch, '_' | '-' | '.')
}

/// The parts of an action key (`Sender?Context@Decorator?Action`) a topic
/// is made of: the node's `ActionKey` is one.
pub trait KeyParts {
    fn decorator_name(&self) -> &str;
    fn sender(&self) -> &str;
    fn context(&self) -> &str;
    fn action(&self) -> &str;
}

/// The separator between a topic's parts.
pub const SEPARATOR: char = '~';

/// A topic's five parts. Any part may be empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Topic {
    pub flow: String,
    pub decorator: String,
    pub sender: String,
    pub context: String,
    pub action: String,
}

/// Why a string is not a topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    #[error("empty topic (expected `flow~decorator~sender~context~action`)")]
    Empty,
    #[error("a topic has at most 5 `~`-separated parts, found {found}")]
    TooManyParts { found: usize },
}

impl Topic {
    /// The topic of `key` within `flow`.
    pub fn new(flow: &str, key: &(impl KeyParts + ?Sized)) -> Self {
        Self {
            flow: flow.to_owned(),
            decorator: key.decorator_name().to_owned(),
            sender: key.sender().to_owned(),
            context: key.context().to_owned(),
            action: key.action().to_owned(),
        }
    }

    /// The topic on which `flow` publishes its results: `Flow~~~~done`.
    pub fn results(flow: &str) -> Self {
        Self {
            flow: flow.to_owned(),
            action: "done".to_owned(),
            ..Self::default()
        }
    }

    /// Parses `flow~decorator~sender~context~action`. Missing trailing parts
    /// are empty (`config~~source` has an empty context and action), as in
    /// DigitalPy; an empty string or more than five parts is an error.
    pub fn parse(text: &str) -> Result<Self, TopicError> {
        if text.is_empty() {
            return Err(TopicError::Empty);
        }
        let parts: Vec<&str> = text.split(SEPARATOR).collect();
        if parts.len() > 5 {
            return Err(TopicError::TooManyParts { found: parts.len() });
        }
        let part = |i: usize| parts.get(i).copied().unwrap_or_default().to_owned();
        Ok(Self {
            flow: part(0),
            decorator: part(1),
            sender: part(2),
            context: part(3),
            action: part(4),
        })
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}~{}~{}~{}~{}",
            self.flow, self.decorator, self.sender, self.context, self.action
        )
    }
}

/// The reply topic of service `id`: `@reply~<id>~`, where the node
/// publishes the results of its requests.
pub fn reply_topic(id: &str) -> String {
    format!("@reply~{id}~")
}

/// True when `topic` starts with `id`'s reply topic (without building it).
pub fn starts_with_reply_topic(topic: &[u8], id: &str) -> bool {
    topic
        .strip_prefix(b"@reply~")
        .and_then(|rest| rest.strip_prefix(id.as_bytes()))
        .is_some_and(|rest| rest.first() == Some(&b'~'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sender?context@decorator?action`, split by hand.
    struct Key([&'static str; 4]);

    impl KeyParts for Key {
        fn decorator_name(&self) -> &str {
            self.0[2]
        }
        fn sender(&self) -> &str {
            self.0[0]
        }
        fn context(&self) -> &str {
            self.0[1]
        }
        fn action(&self) -> &str {
            self.0[3]
        }
    }

    fn key(text: &'static str) -> Key {
        let (sender, rest) = text.split_once('?').expect("a first ?");
        let (middle, action) = rest.split_once('?').expect("a second ?");
        let (context, decorator) = middle.split_once('@').unwrap_or((middle, ""));
        Key([sender, context, decorator, action])
    }

    #[test]
    fn full_key_gives_digitalpy_topic() {
        let topic = Topic::new("config", &key("source?context?action"));
        assert_eq!(topic.to_string(), "config~~source~context~action");
    }

    #[test]
    fn decorator_is_the_second_part() {
        let topic = Topic::new("F", &key("Subject?Ctx@PUBLISH?get"));
        assert_eq!(topic.to_string(), "F~PUBLISH~Subject~Ctx~get");
    }

    #[test]
    fn empty_key_gives_separators_only() {
        assert_eq!(Topic::new("", &key("??")).to_string(), "~~~~");
        assert_eq!(Topic::default().to_string(), "~~~~");
    }

    #[test]
    fn results_topic() {
        assert_eq!(
            Topic::results("IAMConnection").to_string(),
            "IAMConnection~~~~done"
        );
        assert_eq!(Topic::results("F"), Topic::new("F", &key("??done")));
    }

    #[test]
    fn reply_topics_and_their_prefix() {
        assert_eq!(reply_topic("svc-1"), "@reply~svc-1~");
        assert!(starts_with_reply_topic(b"@reply~svc-1~", "svc-1"));
        assert!(starts_with_reply_topic(b"@reply~svc-1~steps", "svc-1"));
        assert!(!starts_with_reply_topic(b"@reply~svc-10~", "svc-1"));
        assert!(!starts_with_reply_topic(b"@reply~svc-1", "svc-1"));
        assert!(!starts_with_reply_topic(b"Greeting~~~~done", "svc-1"));
    }

    #[test]
    fn names_are_letters_digits_and_three_marks() {
        assert!("svc_1-a.b".chars().all(is_field_char));
        for bad in ['~', '?', '@', ' ', '=', ';', '#', ':', '^'] {
            assert!(!is_field_char(bad), "{bad:?}");
        }
    }

    #[test]
    fn missing_parts_are_empty() {
        let topic = Topic::parse("config~~source").unwrap();
        assert_eq!(topic.flow, "config");
        assert_eq!(topic.sender, "source");
        assert_eq!(topic.context, "");
        assert_eq!(topic.action, "");
        assert_eq!(topic.to_string(), "config~~source~~");
    }

    #[test]
    fn parse_round_trips_and_rejects_bad_input() {
        let text = "F~PUBLISH~Subject~Ctx~get";
        assert_eq!(Topic::parse(text).unwrap().to_string(), text);
        assert_eq!(Topic::parse(""), Err(TopicError::Empty));
        assert_eq!(
            Topic::parse("a~b~c~d~e~f"),
            Err(TopicError::TooManyParts { found: 6 })
        );
    }
}
