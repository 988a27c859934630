//! Reads the repository's Bazel files without Bazel, which cannot run on the machines
//! this repository is developed and tested on. A parser for the Starlark the files use
//! (top-level calls and assignments; strings, integers, names, lists, dicts, calls and
//! `+`), and Bazel's `glob`, are enough for `tests/consistency.rs` to hold them to
//! Cargo, `rust-toolchain.toml`, `protos/` and `setpoint-image`.

mod ast;
mod files;
mod parser;

use std::path::PathBuf;

pub use ast::{Call, File, Value};
pub use files::{files_of, glob, package_files};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Syntax {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}
