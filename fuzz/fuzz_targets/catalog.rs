//! `zmanager::catalog::Catalog::build` from fuzzed flow and mapping files.
//!
//! Layout: the first byte picks the formats (bit 0: the first flows file
//! is TOML, bit 1: the first mappings file, bits 2 and 3: the second ones);
//! the rest is split at NUL bytes into up to four texts: flows, mappings,
//! flows, mappings (two of each, so that names and keys can clash across
//! files). Non-UTF-8 text is read lossily.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zmanager::Catalog;
use zmanager::catalog::source::{Format, SourceFile};

fuzz_target!(|data: &[u8]| {
    let Some((&formats, rest)) = data.split_first() else {
        return;
    };
    let mut flows = Vec::new();
    let mut mappings = Vec::new();
    for (i, text) in rest.splitn(4, |&b| b == 0).enumerate() {
        let (format, ext) = if formats >> i & 1 == 1 {
            (Format::Toml, "toml")
        } else {
            (Format::Ini, "ini")
        };
        let text = zmanager_fuzz::text(text).into_owned();
        if i % 2 == 0 {
            flows.push(SourceFile::new(&format!("flows{i}.{ext}"), text, format));
        } else {
            mappings.push(SourceFile::new(&format!("map{i}.{ext}"), text, format));
        }
    }
    let (catalog, diagnostics) = Catalog::build(&flows, &mappings);
    zmanager_fuzz::print(&diagnostics);
    for (name, routed) in &catalog.flows {
        assert!(catalog.flow(name).is_some());
        assert_eq!(
            routed.roles.len(),
            routed.flow.steps.len(),
            "flow {name}: one role per step"
        );
        for (step, _) in routed.flow.steps.iter().enumerate() {
            let _ = catalog.retry_policy(name, step);
        }
        for (role, via) in &routed.roles {
            let _ = format!("{role:?}");
            if let Some(via) = via {
                zmanager_fuzz::check_key(&via.key);
                let _ = via.location.to_string();
            }
        }
    }
    zmanager_fuzz::use_flows(
        &catalog
            .flows
            .values()
            .map(|r| r.flow.clone())
            .collect::<Vec<_>>(),
        &diagnostics,
    );
});
