//! Built-in sample workloads (`mesh-agent app ...`): small, unmodified-looking applications
//! for the demo, the tests and the benchmarks. They know nothing about the mesh.
pub mod echo;
pub mod grpc;
pub mod http;
pub mod tcp_client;
