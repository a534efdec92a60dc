//! Weave's content-addressed cache (to be built: see the cache issue). Step outputs will be
//! stored under blake3 keys computed from the step's kind, version, canonical
//! configuration, the pipeline seed and its inputs' keys, written atomically, checked on
//! read. bincode 2 is used only inside this crate's codec module.
#![deny(missing_docs)]
