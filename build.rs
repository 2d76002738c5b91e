//! The platform and feature `cfg` aliases: the table lives with the backends
//! (`backends/build.rs`), so both crates name each condition the same way.
include!("backends/build.rs");
