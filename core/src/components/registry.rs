//! The components a worker can call, by name: those linked into the binary
//! and those loaded from shared libraries at run time.
//!
//! Linked components register themselves (`zmanager_sdk::register!` in
//! their crate); [`Registry::linked`] collects them. There is no list of
//! them here: `core`'s build script names every `zmanager-component-*`
//! dependency in the `use` lines it generates (included just below), which
//! is what makes rustc link those crates at all. Dynamic components are
//! added with [`Registry::load`] (see [`crate::components::dynamic`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zmanager_sdk::Component;

use crate::catalog::Catalog;
use crate::catalog::diagnostic::{Diagnostics, Location};
use crate::catalog::mapping::{Mapping, Route};
use crate::components::dynamic;

// `use zmanager_component_… as _;` for each component crate `core` depends on.
include!(concat!(env!("OUT_DIR"), "/linked_components.rs"));

/// Where a component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Linked into the binary, registered by this crate.
    Linked { crate_name: &'static str },
    /// Added with [`Registry::register`].
    Registered,
    /// Loaded from this shared library.
    Loaded { path: PathBuf },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Linked { crate_name } => write!(f, "linked from crate {crate_name}"),
            Origin::Registered => f.write_str("registered"),
            Origin::Loaded { path } => write!(f, "loaded from {}", path.display()),
        }
    }
}

#[derive(Clone)]
struct Entry {
    component: Arc<dyn Component>,
    origin: Origin,
}

/// Components by the name action mappings use.
#[derive(Clone, Default)]
pub struct Registry {
    by_name: HashMap<&'static str, Entry>,
    /// Two linked crates registering one name (reported by `check`).
    conflicts: Vec<String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.components().map(|(name, _, _)| name).collect();
        f.debug_struct("Registry")
            .field("components", &names)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// The components linked into this binary.
    pub fn linked() -> Self {
        let mut registry = Self::default();
        let mut linked: Vec<_> = zmanager_sdk::linked::linked()
            .map(|l| (l.make(), l.crate_name()))
            .collect();
        // Registration order is the linker's; make conflicts deterministic.
        linked.sort_by(|a, b| (a.0.name(), a.1).cmp(&(b.0.name(), b.1)));
        for (component, crate_name) in linked {
            let name = component.name();
            if let Some(first) = registry.by_name.get(name) {
                registry.conflicts.push(format!(
                    "component {name} is registered twice: {}, and linked from crate {crate_name}",
                    first.origin
                ));
                continue;
            }
            registry.insert(component, Origin::Linked { crate_name });
        }
        registry
    }

    /// The linked components, and those of the libraries at `paths`; a
    /// library that cannot be used is an error naming its file.
    pub fn with_libraries(paths: &[PathBuf], diagnostics: &mut Diagnostics) -> Self {
        let mut registry = Self::linked();
        for path in paths {
            registry.load(path, diagnostics);
        }
        registry
    }

    /// Adds a component; a second one with the same name replaces nothing
    /// and is reported by returning `false`.
    pub fn register(&mut self, component: impl Component) -> bool {
        if self.by_name.contains_key(component.name()) {
            return false;
        }
        self.insert(Arc::new(component), Origin::Registered);
        true
    }

    /// Loads the component of the shared library at `path`. A library that
    /// cannot be loaded, or whose component has the name of one already
    /// here, is an error at `path`; returns whether it was added.
    pub fn load(&mut self, path: &Path, diagnostics: &mut Diagnostics) -> bool {
        let path = dynamic::absolute(path);
        let location = Location::new(&Arc::from(path.display().to_string()), 0);
        let component = match dynamic::load(&path) {
            Ok(component) => component,
            Err(error) => {
                // The error's message starts with the file already.
                let message = error.to_string();
                let message = message
                    .strip_prefix(&format!("{location}: "))
                    .map_or(message.clone(), str::to_owned);
                diagnostics.error(location, message);
                return false;
            }
        };
        if let Some(first) = self.by_name.get(component.name()) {
            diagnostics.error(
                location,
                format!(
                    "component {} is already {}; a name is served once",
                    component.name(),
                    first.origin
                ),
            );
            return false;
        }
        let origin = Origin::Loaded {
            path: component.path().to_path_buf(),
        };
        self.insert(Arc::new(component), origin);
        true
    }

    fn insert(&mut self, component: Arc<dyn Component>, origin: Origin) {
        self.by_name
            .insert(component.name(), Entry { component, origin });
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Component>> {
        self.by_name.get(name).map(|e| &e.component)
    }

    /// Where the component `name` comes from.
    pub fn origin(&self, name: &str) -> Option<&Origin> {
        self.by_name.get(name).map(|e| &e.origin)
    }

    /// Every component, by name: (name, component, origin).
    pub fn components(&self) -> impl Iterator<Item = (&'static str, &Arc<dyn Component>, &Origin)> {
        let sorted: BTreeMap<&'static str, &Entry> =
            self.by_name.iter().map(|(k, v)| (*k, v)).collect();
        sorted
            .into_iter()
            .map(|(name, e)| (name, &e.component, &e.origin))
    }

    /// The components and the mappings must agree:
    /// - errors: a mapping names a component that is neither linked nor
    ///   loaded, or an action its component does not declare; two linked
    ///   crates register one name;
    /// - warnings: a loaded component declares an action no mapping names,
    ///   or no mapping names it at all. (Not for linked components: every
    ///   node links them all, and a node may use only some of them, or some
    ///   of their actions.)
    pub fn check(&self, catalog: &Catalog, diagnostics: &mut Diagnostics) {
        for conflict in &self.conflicts {
            diagnostics.error(Location::new(&Arc::from("<linked>"), 0), conflict.clone());
        }
        // Per component: the mappings that name it.
        let mut named: BTreeMap<&str, Vec<&Mapping>> = BTreeMap::new();
        for mapping in catalog.mappings.iter() {
            let Route::Action(target) = &mapping.route else {
                continue;
            };
            named.entry(&target.component).or_default().push(mapping);
            match self.get(&target.component) {
                None => diagnostics.error(
                    mapping.location.clone(),
                    format!(
                        "`{}` maps to {target}, but no component {} is linked or loaded (linked: {}; load a library with `--component PATH` or `components` in the node configuration)",
                        mapping.key,
                        target.component,
                        self.linked_names()
                    ),
                ),
                Some(c) if !c.actions().contains(&target.action.as_str()) => diagnostics.error(
                    mapping.location.clone(),
                    format!(
                        "`{}` maps to {target}, but component {} has no action {:?} (it declares {})",
                        mapping.key,
                        target.component,
                        target.action,
                        c.actions().join(", ")
                    ),
                ),
                Some(_) => {}
            }
        }
        for (name, component, origin) in self.components() {
            let Origin::Loaded { path } = origin else {
                continue;
            };
            let mappings = named.get(name).map(Vec::as_slice).unwrap_or_default();
            let location = Location::new(&Arc::from(path.display().to_string()), 0);
            if mappings.is_empty() {
                diagnostics.warning(
                    location,
                    format!("component {name} is loaded, but no mapping names it"),
                );
                continue;
            }
            for action in component.actions() {
                let mapped = mappings
                    .iter()
                    .any(|m| matches!(&m.route, Route::Action(t) if t.action == *action));
                if !mapped {
                    diagnostics.warning(
                        location.clone(),
                        format!(
                            "component {name} declares action {action:?}, which no mapping names"
                        ),
                    );
                }
            }
        }
    }

    fn linked_names(&self) -> String {
        let names: Vec<&str> = self
            .components()
            .filter(|(_, _, o)| !matches!(o, Origin::Loaded { .. }))
            .map(|(name, _, _)| name)
            .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::source::{Format, SourceFile};

    fn catalog(mappings: &str) -> Catalog {
        let (catalog, d) = Catalog::build(&[], &[SourceFile::new("m.ini", mappings, Format::Ini)]);
        assert!(!d.has_errors(), "{d}");
        catalog
    }

    fn check(mappings: &str) -> Vec<String> {
        let mut d = Diagnostics::default();
        Registry::linked().check(&catalog(mappings), &mut d);
        d.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn every_component_crate_core_depends_on_is_linked() {
        let registry = Registry::linked();
        for name in ["Echo", "Greeter", "Iam", "Probe", "Text"] {
            assert!(
                matches!(registry.origin(name), Some(Origin::Linked { .. })),
                "{name}: {registry:?}"
            );
        }
        assert_eq!(
            registry.origin("Iam"),
            Some(&Origin::Linked {
                crate_name: "zmanager-component-iam"
            })
        );
        assert!(registry.conflicts.is_empty(), "{:?}", registry.conflicts);
    }

    #[test]
    fn mappings_and_components_agree() {
        assert_eq!(
            check("[actionmapping]\n??greet = Greeter.greet\n??echo = Echo.echo\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_missing_component_or_action_is_an_error_at_its_mapping() {
        let found =
            check("[actionmapping]\n??a = Nope.a\n??b = Greeter.wave\n??c = Greeter.greet\n");
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0].starts_with("m.ini:2: error: `??a` maps to Nope.a, but no component Nope is linked or loaded (linked: Echo, Greeter, Iam, Probe, Text;"),
            "{}",
            found[0]
        );
        assert_eq!(
            found[1],
            "m.ini:3: error: `??b` maps to Greeter.wave, but component Greeter has no action \"wave\" (it declares greet)"
        );
    }

    #[test]
    fn a_linked_component_may_be_used_in_part() {
        assert_eq!(
            check("[actionmapping]\n??trim = Text.trim\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn register_refuses_a_second_component_of_a_name() {
        let mut registry = Registry::default();
        assert!(registry.register(zmanager_component_echo::Echo));
        assert!(!registry.register(zmanager_component_echo::Echo));
        assert_eq!(registry.origin("Echo"), Some(&Origin::Registered));
    }

    #[test]
    fn a_library_that_does_not_load_is_an_error_naming_it() {
        let mut registry = Registry::linked();
        let mut d = Diagnostics::default();
        assert!(!registry.load(Path::new("/nonexistent/libx.so"), &mut d));
        let found: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(found.len(), 1);
        assert!(
            found[0]
                .starts_with("/nonexistent/libx.so: error: cannot load it as a shared library: "),
            "{}",
            found[0]
        );
    }
}
