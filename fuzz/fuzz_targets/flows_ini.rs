//! `zmanager::catalog::flow::load_ini` on arbitrary text (non-UTF-8 input lossily),
//! and the loaded flows used as the node uses them (see `use_flows`).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use zmanager::Diagnostics;

fuzz_target!(|data: &[u8]| {
    let text = zmanager_fuzz::text(data);
    let file: Arc<str> = Arc::from("fuzz.ini");
    let mut diagnostics = Diagnostics::default();
    let flows = zmanager::catalog::flow::load_ini(&file, &text, &mut diagnostics);
    zmanager_fuzz::use_flows(&flows, &diagnostics);
});
