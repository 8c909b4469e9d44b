//! The components a worker can call, by name.

use std::collections::HashMap;
use std::sync::Arc;

use zmanager_sdk::Component;

use crate::catalog::{Catalog, StepRole};
use crate::diagnostic::Diagnostics;

/// Components by the name action mappings use.
#[derive(Clone, Default)]
pub struct Registry {
    by_name: HashMap<&'static str, Arc<dyn Component>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.by_name.keys().copied().collect();
        names.sort_unstable();
        f.debug_struct("Registry")
            .field("components", &names)
            .finish()
    }
}

impl Registry {
    /// The components linked into this binary.
    pub fn linked() -> Self {
        let mut registry = Self::default();
        registry.register(zmanager_component_echo::Echo);
        registry.register(zmanager_component_greeter::Greeter);
        registry.register(zmanager_component_probe::Probe);
        registry.register(zmanager_component_text::Text);
        registry
    }

    /// Adds a component; a second one with the same name replaces nothing
    /// and is reported by returning `false`.
    pub fn register(&mut self, component: impl Component) -> bool {
        let name = component.name();
        if self.by_name.contains_key(name) {
            return false;
        }
        self.by_name.insert(name, Arc::new(component));
        true
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Component>> {
        self.by_name.get(name)
    }

    /// Every component and action the catalog's steps name must exist here.
    pub fn check(&self, catalog: &Catalog, diagnostics: &mut Diagnostics) {
        for routed in catalog.flows.values() {
            for (step, (role, _)) in routed.flow.steps.iter().zip(&routed.roles) {
                let StepRole::Action(target) = role else {
                    continue;
                };
                match self.get(&target.component) {
                    None => diagnostics.error(
                        step.location.clone(),
                        format!(
                            "step `{}` maps to {target}, but no component {} is linked",
                            step.key, target.component
                        ),
                    ),
                    Some(c) if !c.actions().contains(&target.action.as_str()) => diagnostics
                        .error(
                            step.location.clone(),
                            format!(
                                "step `{}` maps to {target}, but component {} has no action {:?} (it has {})",
                                step.key,
                                target.component,
                                target.action,
                                c.actions().join(", ")
                            ),
                        ),
                    Some(_) => {}
                }
            }
        }
    }
}
