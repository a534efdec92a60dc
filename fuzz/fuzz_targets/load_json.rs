//! `load_json` on any bytes: the input is a file that should hold one JSON array of
//! objects, read element by element as a run reads it (see `weave_fuzz::load_all_ways`
//! for what is checked).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = weave_fuzz::write_input("input.json", data);
    weave_fuzz::load_all_ways("load_json", &path, "", data.len());
});
