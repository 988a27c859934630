//! WatchDeployments: the [`hub`] of numbered changes with resume tokens, the watch
//! [`limits`] per identity and connection, and each watch's [`stream`].

pub mod hub;
pub mod limits;
pub mod stream;
