//! `load_csv` on any bytes: the input is a CSV file, read as a run reads it (see
//! `weave_fuzz::load_all_ways` for what is checked). The input's length picks the small
//! batch limits and, for one input in four, a `;` delimiter and `'` quote.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = weave_fuzz::write_input("input.csv", data);
    let extra = if data.len() % 4 == 3 { "delimiter = \";\"\nquote = \"'\"" } else { "" };
    weave_fuzz::load_all_ways("load_csv", &path, extra, data.len());
});
