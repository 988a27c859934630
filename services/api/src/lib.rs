//! `setpoint-api`, Setpoint's gRPC API server. Its folders follow a request:
//! [`edge`] (TLS and its handshake caps → access span, metrics and log → identity and
//! authorization → protobuf ↔ domain, and the one error → status mapping), then
//! [`replicas`] (the operations: reads from the index through the read model, writes of
//! the setpoint within the caller's write budget) or [`watch`] (WatchDeployments' hub,
//! limits and streams). [`runtime`] wires and starts it all.

pub mod edge;
pub mod error;
pub mod replicas;
pub mod runtime;
pub mod watch;

pub use error::Error;
pub use runtime::Server;
pub use runtime::config::Config;
