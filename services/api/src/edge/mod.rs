//! Where a request enters, in the order it passes: [`tls`] (the one TLS configuration,
//! the accept loop and its handshake caps), [`access`] (the outermost layer: span,
//! metrics, access log), [`authz`] (identity from the certificate ([`identity`]), the
//! RPC's permission ([`methods`]), the policy's answer), and [`grpc`] (protobuf ↔
//! domain, and the one place errors become status codes).

pub mod access;
pub mod authz;
pub mod grpc;
pub mod identity;
pub mod methods;
pub mod tls;
