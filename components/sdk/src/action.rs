//! Actions as plain functions, and [`component!`](crate::component), which
//! turns a list of them into a [`Component`](crate::Component).
//!
//! An action is a function from your request type to your response type:
//!
//! ```
//! # use serde::{Deserialize, Serialize};
//! # use zmanager_sdk::{ActionError, Context};
//! # #[derive(Deserialize)] struct Person { name: String }
//! # #[derive(Serialize)] struct Greeting { greeting: String }
//! fn greet(person: Person) -> Result<Greeting, ActionError> {
//! #   Ok(Greeting { greeting: person.name })
//!     // ...
//! }
//!
//! // Or, when it needs the envelope (message id, flow, service, attempt):
//! fn greet_once(person: Person, context: &Context<'_>) -> Result<Greeting, ActionError> {
//! #   let _ = context.message_id; Ok(Greeting { greeting: person.name })
//!     // ...
//! }
//! ```
//!
//! The request type is anything serde can deserialize (`rmpv::Value` takes
//! any payload); a payload that does not decode into it is answered with an
//! [`ErrorKind::BadRequest`](crate::ErrorKind::BadRequest) error before the
//! function runs. The response is anything serde can serialize; structs
//! become MessagePack maps with their field names, so any language reads
//! them.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{ActionError, Context, Request, respond};

/// A function [`component!`](crate::component) can call as an action.
///
/// Implemented for `fn(In) -> Result<Out, ActionError>` and
/// `fn(In, &Context) -> Result<Out, ActionError>` where `In:
/// DeserializeOwned` and `Out: Serialize`. `Marker` only tells the two
/// shapes apart; you never name it.
pub trait Action<Marker>: Send + Sync + 'static {
    /// Decodes the request, runs the action, encodes its response.
    fn run(&self, request: &Request<'_>) -> Result<Vec<u8>, ActionError>;
}

impl<F, In, Out> Action<fn(In) -> Out> for F
where
    F: Fn(In) -> Result<Out, ActionError> + Send + Sync + 'static,
    In: DeserializeOwned,
    Out: Serialize,
{
    fn run(&self, request: &Request<'_>) -> Result<Vec<u8>, ActionError> {
        let input: In = request.decode()?;
        respond(&self(input)?)
    }
}

impl<F, In, Out> Action<fn(In, &Context<'_>) -> Out> for F
where
    F: for<'a, 'b> Fn(In, &'a Context<'b>) -> Result<Out, ActionError> + Send + Sync + 'static,
    In: DeserializeOwned,
    Out: Serialize,
{
    fn run(&self, request: &Request<'_>) -> Result<Vec<u8>, ActionError> {
        let input: In = request.decode()?;
        respond(&self(input, &request.context)?)
    }
}

/// Not public API: lets the macro call an action with the marker inferred.
#[doc(hidden)]
pub fn __run<M, A: Action<M>>(action: &A, request: &Request<'_>) -> Result<Vec<u8>, ActionError> {
    action.run(request)
}

/// Implements [`Component`](crate::Component) for a type from its name and
/// a list of `"action" => function` pairs.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use zmanager_sdk::{ActionError, Component, Context};
///
/// #[derive(Debug, Default)]
/// pub struct Reverse;
///
/// #[derive(Deserialize, Serialize)]
/// struct Text { text: String }
///
/// fn reverse(input: Text) -> Result<Text, ActionError> {
///     Ok(Text { text: input.text.chars().rev().collect() })
/// }
///
/// fn whoami(_: rmpv::Value, context: &Context<'_>) -> Result<String, ActionError> {
///     Ok(context.service.to_owned())
/// }
///
/// zmanager_sdk::component! {
///     Reverse as "Reverse" {
///         "reverse" => reverse,
///         "whoami" => whoami,
///     }
/// }
///
/// assert_eq!(Reverse.name(), "Reverse");
/// assert_eq!(Reverse.actions(), ["reverse", "whoami"]);
/// assert_eq!(Reverse.version(), env!("CARGO_PKG_VERSION"));
/// ```
///
/// The version is the crate's (`CARGO_PKG_VERSION` of the crate that uses
/// the macro). An action name not listed is answered with an
/// [`ErrorKind::UnknownAction`](crate::ErrorKind::UnknownAction) error.
/// Action and component names are what mappings write (`Reverse.reverse`):
/// letters, digits and `_`.
#[macro_export]
macro_rules! component {
    ($component:ty as $name:literal { $($action:literal => $function:expr),+ $(,)? }) => {
        impl $crate::Component for $component {
            fn name(&self) -> &'static str {
                $name
            }

            fn version(&self) -> &'static str {
                ::core::env!("CARGO_PKG_VERSION")
            }

            fn actions(&self) -> &'static [&'static str] {
                &[$($action),+]
            }

            fn call(
                &self,
                action: &str,
                request: &$crate::Request<'_>,
            ) -> ::core::result::Result<::std::vec::Vec<u8>, $crate::ActionError> {
                match action {
                    $($action => $crate::action::__run(&$function, request),)+
                    other => ::core::result::Result::Err($crate::ActionError::unknown_action($name, other)),
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use crate::{Component, ErrorKind};

    use super::*;

    #[derive(Debug, Default)]
    struct Calc;

    #[derive(Deserialize)]
    struct Pair {
        a: i64,
        b: i64,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sum {
        sum: i64,
    }

    fn add(pair: Pair) -> Result<Sum, ActionError> {
        Ok(Sum {
            sum: pair
                .a
                .checked_add(pair.b)
                .ok_or_else(|| ActionError::bad_request("overflow"))?,
        })
    }

    fn attempt(_: rmpv::Value, context: &Context<'_>) -> Result<u32, ActionError> {
        Ok(context.attempt)
    }

    crate::component! {
        Calc as "Calc" {
            "add" => add,
            "attempt" => attempt,
            "closure" => |n: u8| -> Result<u8, ActionError> { Ok(n.wrapping_add(1)) },
        }
    }

    fn request(payload: &[u8]) -> Request<'_> {
        Request {
            payload,
            context: Context {
                message_id: "m1",
                flow: "F",
                key: "?F?add",
                service: "s",
                attempt: 3,
            },
        }
    }

    #[test]
    fn the_macro_declares_name_version_and_actions() {
        assert_eq!(Calc.name(), "Calc");
        assert_eq!(Calc.version(), env!("CARGO_PKG_VERSION"));
        assert_eq!(Calc.actions(), ["add", "attempt", "closure"]);
    }

    #[test]
    fn actions_decode_their_request_and_encode_their_response() {
        let payload = rmp_serde::to_vec_named(&serde_json_like_pair(2, 40)).unwrap();
        let response = Calc.call("add", &request(&payload)).unwrap();
        assert_eq!(crate::decode::<Sum>(&response).unwrap(), Sum { sum: 42 });

        let payload = respond(&()).unwrap();
        let response = Calc.call("attempt", &request(&payload)).unwrap();
        assert_eq!(crate::decode::<u32>(&response).unwrap(), 3);

        let payload = respond(&255u8).unwrap();
        let response = Calc.call("closure", &request(&payload)).unwrap();
        assert_eq!(crate::decode::<u8>(&response).unwrap(), 0);
    }

    #[test]
    fn errors_keep_their_kind() {
        let payload = respond(&"not a pair").unwrap();
        let error = Calc.call("add", &request(&payload)).unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadRequest);
        assert!(
            error.message.starts_with("payload does not decode"),
            "{error}"
        );

        let payload = rmp_serde::to_vec_named(&serde_json_like_pair(i64::MAX, 1)).unwrap();
        let error = Calc.call("add", &request(&payload)).unwrap_err();
        assert_eq!(error, ActionError::bad_request("overflow"));

        let error = Calc.call("sub", &request(&payload)).unwrap_err();
        assert_eq!(error, ActionError::unknown_action("Calc", "sub"));
    }

    #[derive(Serialize)]
    struct PairOut {
        a: i64,
        b: i64,
    }

    fn serde_json_like_pair(a: i64, b: i64) -> PairOut {
        PairOut { a, b }
    }
}
