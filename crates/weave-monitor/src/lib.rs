//! Weave's monitoring (to be built: see the monitoring issue). It will turn the executor's
//! run events into per-step metrics, pipeline stats, alerts and the run record under
//! `.weave/runs/`.
#![deny(missing_docs)]
