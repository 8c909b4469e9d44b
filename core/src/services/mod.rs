//! What the node keeps for services: who they are and whether they are up
//! ([`registry`], answered by the Subject), the steps given to each and
//! their recoverer ([`steps`]), durable subscriptions ([`durable`]), and the
//! service that answers DigitalPy's service-management flows
//! ([`management`], `zmanager services serve`). The Rust client services
//! use is [`crate::client`].

pub mod durable;
pub mod management;
pub mod registry;
pub mod steps;
