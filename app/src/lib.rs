//! Shared glue for the binaries.
