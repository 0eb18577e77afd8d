//! The hashring crate's one integration-test binary (links once): placement judged against the real peers,
//! carbon 1.1.10 and carbon-c-relay 3.7.3 (drivers in `common`).
//!
//! - `known_vectors`: known vectors and one test per known divergence between the peers;
//! - `differential`: random rings and names, 100 % agreement required.

mod common;
mod differential;
mod known_vectors;
