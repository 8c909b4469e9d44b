//! The mapping loaders, `zmanager::catalog::mapping::load_ini` and
//! `load_toml`, which read the mappings and the retry policies of a file in
//! one pass, on arbitrary text: the first byte picks the format (even: INI,
//! odd: TOML), the rest is the file (non-UTF-8 lossily). The mappings then
//! go in a table and are resolved, and every policy's delays computed.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use zmanager::Diagnostics;
use zmanager::catalog::mapping;

fuzz_target!(|data: &[u8]| {
    let Some((&format, text)) = data.split_first() else {
        return;
    };
    let text = zmanager_fuzz::text(text);
    let mut diagnostics = Diagnostics::default();
    let loaded = if format % 2 == 0 {
        mapping::load_ini(&Arc::from("fuzz.ini"), &text, &mut diagnostics)
    } else {
        mapping::load_toml(&Arc::from("fuzz.toml"), &text, &mut diagnostics)
    };
    zmanager_fuzz::use_mappings(loaded.mappings, &loaded.retry, &mut diagnostics);
});
