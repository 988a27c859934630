//! What a parsed Bazel file holds, as written: its top-level [`Call`]s and their
//! [`Value`]s ([`File::read`] reads and parses one), and the questions the consistency
//! test asks of them (a rule by name, an attribute's strings).

use std::path::{Path, PathBuf};

use crate::Error;
use crate::parser::Parser;

/// A Starlark value as written (nothing is evaluated).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Name(String),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Call(Call),
    /// `a + b + …`
    Sum(Vec<Value>),
}

/// `function(positional…, keyword = value…)`; `function` may be dotted (`crate.from_cargo`).
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub function: String,
    pub positional: Vec<Value>,
    pub keywords: Vec<(String, Value)>,
}

/// A parsed `BUILD.bazel` or `MODULE.bazel`: its top-level calls, in order.
#[derive(Debug)]
pub struct File {
    pub path: PathBuf,
    pub calls: Vec<Call>,
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(text) => Some(text),
            _ => None,
        }
    }

    /// Every string literal in the value, through lists, dicts' values and sums; calls
    /// (`glob`, `all_crate_deps`) are left out.
    pub fn strings(&self) -> Vec<&str> {
        match self {
            Value::Str(text) => vec![text],
            Value::List(items) | Value::Sum(items) => {
                items.iter().flat_map(Value::strings).collect()
            }
            Value::Dict(entries) => entries.iter().flat_map(|(_, v)| v.strings()).collect(),
            Value::Int(_) | Value::Name(_) | Value::Call(_) => Vec::new(),
        }
    }

    /// The calls in the value (`glob(…)` in `srcs = glob(…) + […]`).
    pub fn calls(&self) -> Vec<&Call> {
        match self {
            Value::Call(call) => vec![call],
            Value::List(items) | Value::Sum(items) => items.iter().flat_map(Value::calls).collect(),
            _ => Vec::new(),
        }
    }

    /// A dict of string keys and values, as pairs.
    pub fn string_pairs(&self) -> Option<Vec<(&str, &str)>> {
        match self {
            Value::Dict(entries) => entries
                .iter()
                .map(|(key, value)| Some((key.as_str()?, value.as_str()?)))
                .collect(),
            _ => None,
        }
    }
}

impl Call {
    pub fn get(&self, keyword: &str) -> Option<&Value> {
        self.keywords
            .iter()
            .find(|(key, _)| key == keyword)
            .map(|(_, value)| value)
    }

    /// The `name` attribute of a rule.
    pub fn name(&self) -> Option<&str> {
        self.get("name").and_then(Value::as_str)
    }

    /// The strings of an attribute, or none when it is absent.
    pub fn strings(&self, keyword: &str) -> Vec<&str> {
        self.get(keyword).map(Value::strings).unwrap_or_default()
    }
}

impl File {
    pub fn read(path: impl AsRef<Path>) -> Result<File, Error> {
        let path = path.as_ref().to_path_buf();
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let calls = Parser::new(&text)
            .file()
            .map_err(|(line, reason)| Error::Syntax {
                path: path.clone(),
                line,
                reason,
            })?;
        Ok(File { path, calls })
    }

    /// The top-level calls of `function` (a rule or a macro).
    pub fn calls_of<'a>(&'a self, function: &'a str) -> impl Iterator<Item = &'a Call> + 'a {
        self.calls
            .iter()
            .filter(move |call| call.function == function)
    }

    /// The rule named `name`.
    pub fn target(&self, name: &str) -> Option<&Call> {
        self.calls.iter().find(|call| call.name() == Some(name))
    }
}
