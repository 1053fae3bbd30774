//! The mesh's node agent as a library: the binary (`main.rs`) is a thin CLI over it, and
//! the integration tests drive the same code.
#![deny(unsafe_code)]

pub mod accept;
pub mod agent;
pub mod api;
pub mod app;
pub mod cni;
pub mod config_source;
pub mod demo;
pub mod dns;
pub mod enrollment;
pub mod handoff;
pub mod l7;
pub mod launch;
pub mod manifest;
pub mod pod;
pub mod proxy;
pub mod redirect;
pub mod telemetry;
#[cfg(test)]
mod test_support;
