//! The cache's read path on any bytes, two ways:
//! - as an entry file found on disk under a key (damaged, truncated, another format): the
//!   store must read it as a miss (or, were it intact, as data), never panic;
//! - as the payload of an intact entry: the store returns exactly those bytes, and the
//!   codec decodes them as a step's stored part (`Vec<(sequence, Batch)>`) or refuses
//!   them; a part it accepts must pass `weave_fuzz::check_batch` (it re-encodes to the
//!   same part, and every row can be written), since a replay hands it to later steps.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use weave_cache::{Key, Store, codec};
use weave_core::Batch;

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| Store::open(weave_fuzz::scratch().join("cache")).expect("cannot open the scratch cache"))
}

/// The files under `dir`, at any depth.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn decode_part(payload: &[u8]) {
    if let Some(part) = codec::decode::<Vec<(u64, Batch)>>(payload) {
        for (seq, batch) in &part {
            weave_fuzz::check_batch(*seq, batch, &mut Vec::new());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let store = store();
    let key = Key::of_content(b"weave-fuzz");

    // The bytes as the entry's file: the one file a put leaves in the store's objects.
    store.put_with(&key, codec::BINCODE2, b"a payload to replace", false).expect("put");
    let mut files = Vec::new();
    files_under(&store.root().join("objects"), &mut files);
    assert_eq!(files.len(), 1, "one entry, one file: {files:?}");
    std::fs::write(&files[0], data).expect("write the entry");
    if let Ok(Some(entry)) = store.get(&key) {
        decode_part(&entry.payload);
    }
    store.remove(&key).expect("remove");

    // The bytes as an intact entry's payload.
    store.put_with(&key, codec::BINCODE2, data, false).expect("put");
    let entry = store.get(&key).expect("get").expect("an intact entry reads back");
    assert!(entry.codec == codec::BINCODE2 && entry.payload == data, "an intact entry read back changed");
    decode_part(&entry.payload);
    store.remove(&key).expect("remove");
});
