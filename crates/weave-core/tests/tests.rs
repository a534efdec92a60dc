//! Integration tests of weave-core, one binary.

// Property tests of the DAG on random graphs.
mod dag_props;
