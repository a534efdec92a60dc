//! `load_jsonl` on any bytes: the input is a JSON Lines file, read as a run reads it (see
//! `weave_fuzz::load_all_ways` for what is checked).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = weave_fuzz::write_input("input.jsonl", data);
    weave_fuzz::load_all_ways("load_jsonl", &path, "", data.len());
});
