//! The mapping loaders, `zmanager::catalog::mapping::load_ini` and `load_toml`, and
//! the retry policies read from the same files (`zmanager::retry`), on
//! arbitrary text: the first byte picks the format (even: INI, odd: TOML),
//! the rest is the file (non-UTF-8 lossily). The mappings then go in a
//! table and are resolved, and every policy's delays computed.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use zmanager::catalog::mapping;
use zmanager::{Diagnostics, retry};

fuzz_target!(|data: &[u8]| {
    let Some((&format, text)) = data.split_first() else {
        return;
    };
    let text = zmanager_fuzz::text(text);
    let mut diagnostics = Diagnostics::default();
    let (mappings, policies) = if format % 2 == 0 {
        let file: Arc<str> = Arc::from("fuzz.ini");
        (
            mapping::load_ini(&file, &text, &mut diagnostics),
            retry::load_ini(&file, &text, &mut diagnostics),
        )
    } else {
        let file: Arc<str> = Arc::from("fuzz.toml");
        (
            mapping::load_toml(&file, &text, &mut diagnostics),
            retry::load_toml(&file, &text, &mut diagnostics),
        )
    };
    zmanager_fuzz::use_mappings(mappings, &policies, &mut diagnostics);
});
