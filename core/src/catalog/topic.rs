//! Topics: what a message is published on, derived from its flow and key.
//!
//! The shape is DigitalPy's (`flow~decorator~sender~context~action`), and
//! it is part of the wire protocol, so it is defined once, in the client
//! crate ([`zmanager_client::wire::topic`]), and re-exported here: a
//! flow's results are published on `Flow~~~~done`, a service's on its
//! reply topic `@reply~<id>~`. Here: an [`ActionKey`] gives the parts of
//! the topic of its step.

use crate::catalog::action_key::ActionKey;

pub use zmanager_client::wire::topic::{
    KeyParts, SEPARATOR, Topic, TopicError, reply_topic, starts_with_reply_topic,
};

impl KeyParts for ActionKey {
    fn decorator_name(&self) -> &str {
        ActionKey::decorator_name(self)
    }

    fn sender(&self) -> &str {
        ActionKey::sender(self)
    }

    fn context(&self) -> &str {
        ActionKey::context(self)
    }

    fn action(&self) -> &str {
        ActionKey::action(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> ActionKey {
        ActionKey::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
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
    }

    #[test]
    fn the_results_topic_is_that_of_the_done_key() {
        assert_eq!(Topic::results("F"), Topic::new("F", &key("??done")));
    }
}
