//! Integration tests of the whole library through the facade, one binary.

// Metrics collected from a real run with injected failures equal the known counts.
mod metrics;

// Orchestrator::cache: unchanged work taken from the cache.
mod cache;

// Every key of every kind, and every pipeline-level key, is in the cache keys it bears on
// unless declared output-neutral.
mod keys;

// In-memory ends: MemorySource → clean → MemorySink, and their cache keys.
mod memory;

// Run options go to building and the session: the caller's over the file's.
mod session;

// A step kind registered at run time: checked, cached, measured and listed as built-in kinds are.
mod kinds;

// The stateful steps' outputs at 1, 2 and 8 threads, against golden hashes.
mod stateful;
