//! Weave's executor (to be built: see the executor issue). It will run a validated
//! [`weave_core::Dag`] of steps on a rayon pool, with bounded crossbeam channels between
//! steps, order-restoring parallel transforms, retries, timeouts, cancellation and a
//! memory budget. It knows no concrete step: only the traits in `weave-core`.
#![deny(missing_docs)]
