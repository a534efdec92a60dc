//! Writes the seeds of the `cache_entry` target: what a run stores for a step, made from
//! the loaders' own seeds. For each of them, the parts as the codec writes them
//! (`Vec<(sequence, Batch)>`, one batch a part, as a source stage stores them), and one
//! whole entry file as the store writes it (header and payload), so that both of the
//! target's readings start from real data.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example cache_seeds` (run.sh says when).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use weave_cache::{Key, Store, codec};
use weave_core::{Batch, Step, StepContext};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("seeds/cache_entry");
    std::fs::create_dir_all(&out).expect("make the seed folder");
    let store_dir = tempfile::tempdir().expect("a temporary folder");
    let store = Store::open(store_dir.path()).expect("open a store");
    let mut written = 0;
    for (kind, dir) in [("load_csv", "load_csv"), ("load_jsonl", "load_jsonl"), ("load_json", "load_json")] {
        let mut seeds: Vec<_> = std::fs::read_dir(root.join("seeds").join(dir))
            .expect("the loader seeds")
            .flatten()
            .map(|e| e.path())
            .collect();
        seeds.sort();
        for seed in seeds {
            let keys = format!("path = {}\nbatch_size = 2", weave_fuzz::toml_str(&seed));
            let Ok(Step::Source(mut source)) = weave_fuzz::registry().build(kind, &keys) else { continue };
            let mut parts: Vec<(u64, Batch)> = Vec::new();
            for seq in 0.. {
                let mut ctx = StepContext::new("load", 0, seq, Arc::new(AtomicBool::new(false)));
                match source.next_batch(&mut ctx) {
                    Ok(Some(b)) => parts.push((seq, b)),
                    _ => break,
                }
            }
            if parts.is_empty() {
                continue;
            }
            let name = seed.file_name().and_then(|n| n.to_str()).unwrap_or("seed").replace('.', "-");
            let payload = codec::encode(&parts).expect("encode");
            std::fs::write(out.join(format!("{name}.part")), &payload).expect("write a seed");
            let first = codec::encode(&parts[..1]).expect("encode");
            let key = Key::of_content(name.as_bytes());
            store.put(&key, codec::BINCODE2, &first).expect("put");
            let mut files = Vec::new();
            for dir in std::fs::read_dir(store_dir.path().join("objects")).expect("objects").flatten() {
                files.extend(std::fs::read_dir(dir.path()).expect("a folder").flatten().map(|e| e.path()));
            }
            for f in &files {
                std::fs::copy(f, out.join(format!("{name}.entry"))).expect("copy an entry");
                std::fs::remove_file(f).expect("remove");
            }
            written += 1 + files.len();
        }
    }
    println!("{written} seeds in {}", out.display());
}
