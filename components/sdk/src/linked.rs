//! Components linked into a binary register themselves: no central list.
//!
//! A component crate says, once, next to its type:
//!
//! ```
//! # #[derive(Debug, Default)] pub struct Echo;
//! # zmanager_sdk::component! { Echo as "Echo" { "echo" => |v: rmpv::Value| -> Result<rmpv::Value, zmanager_sdk::ActionError> { Ok(v) } } }
//! zmanager_sdk::register!(Echo);
//! ```
//!
//! and any binary that links the crate finds it with [`linked`]. It is built
//! on the `inventory` crate: each registration is a static that the
//! platform's loader adds to a list before `main` runs.
//!
//! **A crate is linked only if the binary's code names it.** rustc drops a
//! dependency that no code refers to (it never even loads it), and its
//! registration with it. The `zmanager` binary names every
//! `zmanager-component-*` dependency of `core` in code its build script
//! generates (`core/build.rs`), so adding the dependency is all it takes
//! there. In a binary of your own, write `use my_component as _;` once.

use std::fmt;
use std::sync::Arc;

use crate::Component;

/// One linked component: how to make it, and which crate registered it.
pub struct Linked {
    make: fn() -> Arc<dyn Component>,
    crate_name: &'static str,
}

impl Linked {
    /// Used by [`register!`](crate::register); `crate_name` is the crate
    /// that registers the component (for diagnostics).
    pub const fn new(make: fn() -> Arc<dyn Component>, crate_name: &'static str) -> Self {
        Self { make, crate_name }
    }

    /// A new instance of the component.
    pub fn make(&self) -> Arc<dyn Component> {
        (self.make)()
    }

    /// The crate that registered it.
    pub fn crate_name(&self) -> &'static str {
        self.crate_name
    }
}

impl fmt::Debug for Linked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Linked")
            .field("crate_name", &self.crate_name)
            .finish_non_exhaustive()
    }
}

inventory::collect!(Linked);

/// Every component registered with [`register!`](crate::register) in the
/// crates linked into this binary, in no particular order.
pub fn linked() -> impl Iterator<Item = &'static Linked> {
    inventory::iter::<Linked>.into_iter()
}

/// Registers a component type with every binary that links this crate.
///
/// `register!(Type)` makes it with `Default`; `register!(Type, expression)`
/// with the expression (evaluated when a registry is built, once per
/// process). Place it at the top level of the component's crate.
#[macro_export]
macro_rules! register {
    ($component:ty) => {
        $crate::register!(
            $component,
            <$component as ::core::default::Default>::default()
        );
    };
    ($component:ty, $make:expr) => {
        $crate::__private::inventory::submit! {
            $crate::Linked::new(
                {
                    fn make() -> ::std::sync::Arc<dyn $crate::Component> {
                        let component: $component = $make;
                        ::std::sync::Arc::new(component)
                    }
                    make
                },
                ::core::env!("CARGO_PKG_NAME"),
            )
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ActionError;

    #[derive(Debug, Default)]
    struct Registered;

    crate::component! {
        Registered as "Registered" {
            "ping" => |_: rmpv::Value| -> Result<&'static str, ActionError> { Ok("pong") },
        }
    }

    crate::register!(Registered);

    #[test]
    fn a_registered_component_is_found() {
        let found: Vec<_> = linked()
            .filter(|l| l.make().name() == "Registered")
            .collect();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].crate_name(), "zmanager-sdk");
    }
}
