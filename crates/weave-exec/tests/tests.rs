//! Integration tests of the executor, one binary.

// Steps made for the tests: generators, failing and sleeping transforms, collecting sinks.
mod steps;
// Output order and content, whatever the thread count.
mod determinism;
// Retries, fatal errors, timeouts, panics, cancellation, bad records.
mod failures;
// The memory budget and back-pressure.
mod memory;
// Cache entries: replay, skip, resume.
mod cache;
// A stateful step's preparation on the pool: order, retries, failure, cancellation.
mod prepared;
// Where calls run: within max_concurrent, stage threads included.
mod placement;
