//! The lab's harness for Microservices Playground: real `playground` processes on free loopback ports,
//! and an HTTP client that speaks the API. The integration tests (`nodes/tests/`) drive the product only
//! through these, as a user would, and the benchmarks start what they measure with them. The binary
//! `playground-sim` (`src/bin/playground-sim.rs`, run by `playground sim`) runs the simulations.
//!
//! - `process`: start (with test or product settings), kill -9, freeze and stop node and launcher processes.
//! - `cluster`: a replicated cluster of node and gateway processes, each killable, freezable, restartable.
//! - `proxy`: a fault proxy for one directed link: delay, jitter, black-hole, bandwidth, reset.
//! - `client`: requests with JSON bodies, tokens and headers; responses with status, headers and body.
//! - `common`: what the simulations and the benchmarks share: the product binary, free ports, the git
//!   commit, order statistics.
//! - `sim`: fault-injection scenarios: a seeded fault schedule, a recorded workload, checkers and a report.

mod client;
mod cluster;
pub mod common;
mod process;
mod proxy;
pub mod sim;

pub use client::{Api, Response};
pub use cluster::{Member, ProcessCluster, ADMIN_TOKEN};
pub use process::{eventually, Launch, NodeProcess, Settings, TestCluster};
pub use proxy::{Direction, FaultProxy, Faults};
