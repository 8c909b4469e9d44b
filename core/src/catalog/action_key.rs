//! Action keys: `Sender?Context@Decorator?Action`.
//!
//! An action key names a step of a flow and, through the action mappings, the
//! component action that runs it. The decorator is optional
//! (`Sender?Context?Action`). Any field may be empty; an empty field is a
//! wildcard when a key is used as a pattern (see [`ActionKey::matches`]).
//!
//! A field is made of letters, digits, `_`, `-`, `.` and `^`
//! ([`is_key_char`]). `^` is DigitalPy's: its generated HTTP blueprints
//! write the `/` of a route as `^` in the context (`/Component/<id>` is
//! the context `^Component^`, `/file/get-or-create` is `^file^get-or-create`),
//! and its own mapping files use such keys (`?^Component?GETComponent`).
//! It has no other meaning, there or here: it is an ordinary character,
//! compared exactly when keys match, and carried as is in topics.
//!
//! Two decorators have a behaviour, [`Decorator::Publish`] and
//! [`Decorator::Async`]. Every other decorator (DigitalPy's own files use
//! `@ROUTING_WORKER` and `@worker`) loads as a [`Decorator::Qualifier`]: it
//! only becomes part of the topic and of the key's identity.

use std::fmt;

/// A parsed `Sender?Context@Decorator?Action` key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActionKey {
    sender: String,
    context: String,
    decorator: Option<Decorator>,
    action: String,
}

/// The optional `@Decorator` of an action key's context.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Decorator {
    /// `@PUBLISH`: the step is not run by a worker; the message is published
    /// on the step's topic by the Integration Manager.
    Publish,
    /// `@ASYNC`: the flow suspends at this step until an external response
    /// for it arrives.
    Async,
    /// Any other decorator: a plain topic qualifier with no behaviour.
    Qualifier(String),
}

/// Which field of an action key an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Sender,
    Context,
    Decorator,
    Action,
}

/// Why a string is not an action key. Each rule has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("empty action key (expected `Sender?Context?Action`)")]
    Empty,
    #[error(
        "an action key has exactly two `?` separators (`Sender?Context@Decorator?Action`), found {found}"
    )]
    SeparatorCount { found: usize },
    #[error("character {ch:?} at byte {offset} cannot appear in the {field}")]
    InvalidChar {
        field: Field,
        ch: char,
        offset: usize,
    },
    #[error("`@` must be followed by a decorator name (e.g. `Context@PUBLISH`)")]
    EmptyDecorator,
    #[error("a context has at most one `@Decorator`, found {found}")]
    DecoratorCount { found: usize },
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Sender => "sender",
            Field::Context => "context",
            Field::Decorator => "decorator",
            Field::Action => "action",
        })
    }
}

/// Characters allowed in names (of flows, services, subscribers) and in
/// every field of an action key; defined with the wire protocol's topics,
/// which are made of them.
pub use zmanager_client::wire::topic::is_field_char;

/// Characters allowed in the fields of an action key: those of
/// [`is_field_char`], and `^`.
///
/// `^` is allowed in keys only (not in flow, service or subscriber
/// names): DigitalPy's key grammar (`[\w^\-_]*` for each field, in
/// `SerializerActionKey.deserialize_from_ini` and
/// `ActionFlowController.create_action_flow`) has it, for the `/` of an
/// HTTP route (see the [module](self) docs).
pub fn is_key_char(ch: char) -> bool {
    is_field_char(ch) || ch == '^'
}

fn check_field(text: &str, base: usize, field: Field) -> Result<(), KeyError> {
    match text.char_indices().find(|&(_, ch)| !is_key_char(ch)) {
        Some((i, ch)) => Err(KeyError::InvalidChar {
            field,
            ch,
            offset: base + i,
        }),
        None => Ok(()),
    }
}

impl ActionKey {
    /// Builds a key from its fields, checking each as [`ActionKey::parse`] does.
    pub fn new(
        sender: &str,
        context: &str,
        decorator: Option<Decorator>,
        action: &str,
    ) -> Result<Self, KeyError> {
        check_field(sender, 0, Field::Sender)?;
        check_field(context, 0, Field::Context)?;
        if let Some(d) = &decorator {
            let name = d.name();
            if name.is_empty() {
                return Err(KeyError::EmptyDecorator);
            }
            check_field(name, 0, Field::Decorator)?;
        }
        check_field(action, 0, Field::Action)?;
        Ok(Self {
            sender: sender.to_owned(),
            context: context.to_owned(),
            decorator,
            action: action.to_owned(),
        })
    }

    /// Parses `Sender?Context@Decorator?Action` or `Sender?Context?Action`.
    ///
    /// No trimming is done: surrounding whitespace is an invalid character.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        let found = text.matches('?').count();
        if found != 2 {
            return Err(KeyError::SeparatorCount { found });
        }
        let mut parts = text.splitn(3, '?');
        let (Some(sender), Some(middle), Some(action)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(KeyError::SeparatorCount { found });
        };
        let middle_at = sender.len() + 1;
        let action_at = middle_at + middle.len() + 1;

        check_field(sender, 0, Field::Sender)?;
        check_field(action, action_at, Field::Action)?;
        let ats = middle.matches('@').count();
        let (context, decorator) = match ats {
            0 => (middle, None),
            1 => {
                let (context, name) = middle.split_once('@').unwrap_or((middle, ""));
                if name.is_empty() {
                    return Err(KeyError::EmptyDecorator);
                }
                check_field(name, middle_at + context.len() + 1, Field::Decorator)?;
                (context, Some(Decorator::from_name(name)))
            }
            found => return Err(KeyError::DecoratorCount { found }),
        };
        check_field(context, middle_at, Field::Context)?;
        Ok(Self {
            sender: sender.to_owned(),
            context: context.to_owned(),
            decorator,
            action: action.to_owned(),
        })
    }

    pub fn sender(&self) -> &str {
        &self.sender
    }

    pub fn context(&self) -> &str {
        &self.context
    }

    pub fn decorator(&self) -> Option<&Decorator> {
        self.decorator.as_ref()
    }

    pub fn action(&self) -> &str {
        &self.action
    }

    /// The decorator's name, or `""` when the key has none.
    pub fn decorator_name(&self) -> &str {
        self.decorator.as_ref().map_or("", Decorator::name)
    }

    /// True when the key's action is `done`: the flow ends here.
    pub fn is_done(&self) -> bool {
        self.action == "done"
    }

    /// True when this key, used as a pattern, matches `key`.
    ///
    /// Each field of `self` that is empty matches anything; a non-empty field
    /// must be equal. The context and its decorator count as one field
    /// (`Context@Decorator`), as in DigitalPy's string keys: `?Ctx?a` does not
    /// match `s?Ctx@PUBLISH?a`, but `??a` does.
    pub fn matches(&self, key: &ActionKey) -> bool {
        let field = |pattern: &str, value: &str| pattern.is_empty() || pattern == value;
        field(&self.sender, &key.sender)
            && (self.context_is_empty()
                || (self.context == key.context && self.decorator == key.decorator))
            && field(&self.action, &key.action)
    }

    /// True when both the context and the decorator are empty.
    pub fn context_is_empty(&self) -> bool {
        self.context.is_empty() && self.decorator.is_none()
    }

    /// The same key with some fields emptied: the wildcard forms tried by
    /// resolution (see [`crate::catalog::mapping`]).
    pub(crate) fn with_wildcards(&self, sender: bool, context: bool, action: bool) -> ActionKey {
        ActionKey {
            sender: if sender {
                String::new()
            } else {
                self.sender.clone()
            },
            context: if context {
                String::new()
            } else {
                self.context.clone()
            },
            decorator: if context {
                None
            } else {
                self.decorator.clone()
            },
            action: if action {
                String::new()
            } else {
                self.action.clone()
            },
        }
    }
}

impl fmt::Display for ActionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}?{}", self.sender, self.context)?;
        if let Some(d) = &self.decorator {
            write!(f, "@{}", d.name())?;
        }
        write!(f, "?{}", self.action)
    }
}

impl std::str::FromStr for ActionKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Decorator {
    /// `PUBLISH` and `ASYNC` (exactly, upper case) have a behaviour; any other
    /// name is a plain qualifier.
    pub fn from_name(name: &str) -> Self {
        match name {
            "PUBLISH" => Decorator::Publish,
            "ASYNC" => Decorator::Async,
            other => Decorator::Qualifier(other.to_owned()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Decorator::Publish => "PUBLISH",
            Decorator::Async => "ASYNC",
            Decorator::Qualifier(name) => name,
        }
    }

    /// For a qualifier that differs from `PUBLISH`/`ASYNC` only by case, the
    /// decorator that was probably meant.
    pub fn probably_meant(&self) -> Option<Decorator> {
        match self {
            Decorator::Qualifier(name) if name.eq_ignore_ascii_case("PUBLISH") => {
                Some(Decorator::Publish)
            }
            Decorator::Qualifier(name) if name.eq_ignore_ascii_case("ASYNC") => {
                Some(Decorator::Async)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(text: &str) -> ActionKey {
        ActionKey::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn parses_full_key() {
        let k = key("Sender?Context@PUBLISH?Action");
        assert_eq!(k.sender(), "Sender");
        assert_eq!(k.context(), "Context");
        assert_eq!(k.decorator(), Some(&Decorator::Publish));
        assert_eq!(k.action(), "Action");
        assert_eq!(k.to_string(), "Sender?Context@PUBLISH?Action");
    }

    #[test]
    fn parses_key_without_decorator_and_with_empty_fields() {
        let k = key("?IAMConnection?Push");
        assert_eq!(k.sender(), "");
        assert_eq!(k.context(), "IAMConnection");
        assert_eq!(k.decorator(), None);
        assert_eq!(k.action(), "Push");
        let done = key("??done");
        assert!(done.is_done());
        assert!(done.context_is_empty());
        assert_eq!(key("??").to_string(), "??");
    }

    #[test]
    fn behaviour_decorators_and_qualifiers() {
        assert_eq!(key("?C@ASYNC?a").decorator(), Some(&Decorator::Async));
        let routing = key("?updateRoutingWorkers@ROUTING_WORKER?Publish");
        assert_eq!(
            routing.decorator(),
            Some(&Decorator::Qualifier("ROUTING_WORKER".into()))
        );
        let lower = key("test?SubjectTest@worker?Push");
        assert_eq!(lower.decorator_name(), "worker");
        assert_eq!(
            key("?C@publish?a")
                .decorator()
                .and_then(Decorator::probably_meant),
            Some(Decorator::Publish)
        );
        assert_eq!(lower.decorator().and_then(Decorator::probably_meant), None);
    }

    #[test]
    fn each_rule_has_its_own_error() {
        assert_eq!(ActionKey::parse(""), Err(KeyError::Empty));
        assert_eq!(
            ActionKey::parse("a?b"),
            Err(KeyError::SeparatorCount { found: 1 })
        );
        assert_eq!(
            ActionKey::parse("a?b?c?d"),
            Err(KeyError::SeparatorCount { found: 3 })
        );
        assert_eq!(
            ActionKey::parse("a b?c?d"),
            Err(KeyError::InvalidChar {
                field: Field::Sender,
                ch: ' ',
                offset: 1
            })
        );
        assert_eq!(
            ActionKey::parse("a?c~x?d"),
            Err(KeyError::InvalidChar {
                field: Field::Context,
                ch: '~',
                offset: 3
            })
        );
        assert_eq!(
            ActionKey::parse("a?c?d@e"),
            Err(KeyError::InvalidChar {
                field: Field::Action,
                ch: '@',
                offset: 5
            })
        );
        assert_eq!(
            ActionKey::parse("a?c@P!?d"),
            Err(KeyError::InvalidChar {
                field: Field::Decorator,
                ch: '!',
                offset: 5
            })
        );
        assert_eq!(ActionKey::parse("a?c@?d"), Err(KeyError::EmptyDecorator));
        assert_eq!(
            ActionKey::parse("a?c@x@y?d"),
            Err(KeyError::DecoratorCount { found: 2 })
        );
    }

    #[test]
    fn errors_read_clearly() {
        let e = ActionKey::parse("a?b").unwrap_err().to_string();
        assert!(e.contains("exactly two `?`"), "{e}");
        let e = ActionKey::parse("a?b c?d").unwrap_err().to_string();
        assert_eq!(e, "character ' ' at byte 3 cannot appear in the context");
    }

    #[test]
    fn wildcard_matching() {
        let concrete = key("svc?IAMConnection?Push");
        assert!(key("?IAMConnection?Push").matches(&concrete));
        assert!(key("??Push").matches(&concrete));
        assert!(key("svc??").matches(&concrete));
        assert!(!key("other?IAMConnection?Push").matches(&concrete));
        assert!(!key("?IAMConnection?Pull").matches(&concrete));
        let decorated = key("s?Ctx@PUBLISH?a");
        assert!(key("??a").matches(&decorated));
        assert!(key("?Ctx@PUBLISH?a").matches(&decorated));
        assert!(!key("?Ctx?a").matches(&decorated));
    }

    #[test]
    fn digitalpy_caret_keys_parse_and_match_exactly() {
        // From DigitalPy's component_management and files mappings: `^`
        // stands for the `/` of an HTTP route.
        let k = key("?^Component^?GETComponentId");
        assert_eq!(
            (k.sender(), k.context(), k.action()),
            ("", "^Component^", "GETComponentId")
        );
        assert_eq!(k.to_string(), "?^Component^?GETComponentId");
        let k = key("?^file^get-or-create?GETFileGet-or-create");
        assert_eq!(k.context(), "^file^get-or-create");
        assert_eq!(key("^s?^c@^D^?^a^").decorator_name(), "^D^");
        // An ordinary character: `^Component` is not `^Component^`, nor
        // `Component`.
        let mapped = key("?^Component?GETComponent");
        assert!(mapped.matches(&key("Subject?^Component?GETComponent")));
        assert!(!mapped.matches(&key("Subject?^Component^?GETComponent")));
        assert!(!mapped.matches(&key("Subject?Component?GETComponent")));
        assert!(key("??GETComponent").matches(&key("s?^Component?GETComponent")));
        // Still not allowed: what DigitalPy's grammar refuses too.
        assert_eq!(
            ActionKey::parse("?/Component?GET"),
            Err(KeyError::InvalidChar {
                field: Field::Context,
                ch: '/',
                offset: 1
            })
        );
        // `^` is a key character only: names keep their rule.
        assert!(is_key_char('^') && !is_field_char('^'));
    }

    /// DigitalPy's grammar of a key, anchored: each field `[\w^\-_]*`, an
    /// optional `@` and non-empty decorator (`ActionFlowController`'s
    /// `^[\w^\-_]*\?[\w^\-_]*(@[\w^\-_]+)?\?[\w^\-_]*`).
    fn digitalpy_accepts(text: &str) -> bool {
        let field = |f: &str| {
            f.chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '^' | '-'))
        };
        let parts: Vec<&str> = text.split('?').collect();
        let [sender, middle, action] = parts[..] else {
            return false;
        };
        let context_ok = match middle.split_once('@') {
            None => field(middle),
            Some((context, decorator)) => {
                field(context) && !decorator.is_empty() && field(decorator)
            }
        };
        field(sender) && context_ok && field(action)
    }

    fn field() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.^-]{0,12}"
    }

    proptest! {
        #[test]
        fn print_then_parse_is_identity(
            s in field(), c in field(), d in proptest::option::of("[A-Za-z0-9_.^-]{1,12}"), a in field()
        ) {
            let text = match &d {
                Some(d) => format!("{s}?{c}@{d}?{a}"),
                None => format!("{s}?{c}?{a}"),
            };
            let parsed = ActionKey::parse(&text).unwrap();
            prop_assert_eq!(parsed.to_string(), text);
            let built = ActionKey::new(&s, &c, d.as_deref().map(Decorator::from_name), &a).unwrap();
            prop_assert_eq!(built, parsed);
        }

        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(k) = ActionKey::parse(&text) {
                prop_assert_eq!(k.to_string(), text.as_ref());
            }
        }

        #[test]
        fn parser_never_panics_on_key_like_text(text in "[?@a-z~ =^]{0,16}") {
            let _ = ActionKey::parse(&text);
        }

        /// Every key DigitalPy's grammar takes parses here, and prints
        /// back as written; a key refused there is refused here, except
        /// for `.`, which zmanager's own files may use (a key with `.`
        /// is not one of DigitalPy's).
        #[test]
        fn accepts_what_digitalpy_accepts_and_refuses_what_it_refuses(
            text in "[a-zA-Z0-9_^.@?~ /=:-]{0,16}"
        ) {
            let ours = ActionKey::parse(&text);
            if digitalpy_accepts(&text) {
                let key = ours.unwrap_or_else(|e| panic!("{text:?}: {e}"));
                prop_assert_eq!(key.to_string(), text);
            } else if !text.contains('.') {
                prop_assert!(ours.is_err(), "{:?} parsed but DigitalPy refuses it", text);
            }
        }
    }
}
