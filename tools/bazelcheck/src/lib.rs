//! Reads the repository's Bazel files without Bazel, which cannot run on the machines
//! this repository is developed and tested on. A parser for the Starlark the files use
//! (top-level calls and assignments; strings, integers, names, lists, dicts, calls and
//! `+`), and Bazel's `glob`, are enough for `tests/consistency.rs` to hold them to
//! Cargo, `rust-toolchain.toml`, `protos/` and `setpoint-image`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use regex::Regex;

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

/// The files a `srcs`-like attribute names in `package` (a folder): its string
/// entries and its `glob` calls, as paths relative to the package.
pub fn files_of(value: &Value, package: &Path) -> Result<Vec<String>, Error> {
    let mut files: Vec<String> = value
        .strings()
        .into_iter()
        .filter(|entry| !entry.starts_with(':') && !entry.contains("//"))
        .map(str::to_owned)
        .collect();
    for call in value
        .calls()
        .into_iter()
        .filter(|call| call.function == "glob")
    {
        let patterns = |value: Option<&Value>| -> Vec<String> {
            value
                .map(|v| v.strings().into_iter().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let include = patterns(call.positional.first().or(call.get("include")));
        let exclude = patterns(call.get("exclude"));
        files.extend(glob(package, &include, &exclude)?);
    }
    Ok(files)
}

/// Bazel's `glob`: the files under `package` matching an `include` pattern and no
/// `exclude` one (`*` within a path segment, `**` across segments), not descending into
/// sub-packages (folders with a `BUILD.bazel`) or `target/`.
pub fn glob(package: &Path, include: &[String], exclude: &[String]) -> Result<Vec<String>, Error> {
    let compile = |patterns: &[String]| -> Vec<Regex> {
        patterns
            .iter()
            .map(|pattern| {
                let mut regex = String::from("^");
                let mut rest = pattern.as_str();
                while !rest.is_empty() {
                    if let Some(after) = rest.strip_prefix("**/") {
                        regex.push_str("(?:.*/)?");
                        rest = after;
                    } else if let Some(after) = rest.strip_prefix("**") {
                        regex.push_str(".*");
                        rest = after;
                    } else if let Some(after) = rest.strip_prefix('*') {
                        regex.push_str("[^/]*");
                        rest = after;
                    } else {
                        let next = rest.chars().next().unwrap_or_default();
                        regex.push_str(&regex::escape(&next.to_string()));
                        rest = &rest[next.len_utf8()..];
                    }
                }
                regex.push('$');
                Regex::new(&regex).expect("a glob pattern gives a valid regex")
            })
            .collect()
    };
    let (include, exclude) = (compile(include), compile(exclude));
    Ok(package_files(package)?
        .into_iter()
        .filter(|file| include.iter().any(|re| re.is_match(file)))
        .filter(|file| !exclude.iter().any(|re| re.is_match(file)))
        .collect())
}

/// Every file of the package in `dir` (relative paths, sorted): not in sub-packages,
/// `target/` or hidden folders.
pub fn package_files(dir: &Path) -> Result<Vec<String>, Error> {
    fn walk(root: &Path, dir: &Path, files: &mut Vec<String>) -> Result<(), Error> {
        let read_error = |source| Error::Read {
            path: dir.to_path_buf(),
            source,
        };
        for entry in std::fs::read_dir(dir).map_err(read_error)? {
            let path = entry.map_err(read_error)?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') && !path.join("BUILD.bazel").exists()
                {
                    walk(root, &path, files)?;
                }
            } else if let Ok(relative) = path.strip_prefix(root) {
                files.push(relative.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    Ok(files)
}

/// `value` with the name `variable` replaced by the string `item`.
fn substitute(value: &Value, variable: &str, item: &str) -> Value {
    let each = |values: &[Value]| -> Vec<Value> {
        values
            .iter()
            .map(|value| substitute(value, variable, item))
            .collect()
    };
    match value {
        Value::Name(name) if name == variable => Value::Str(item.to_owned()),
        Value::List(items) => Value::List(each(items)),
        Value::Dict(entries) => Value::Dict(
            entries
                .iter()
                .map(|(key, value)| {
                    (
                        substitute(key, variable, item),
                        substitute(value, variable, item),
                    )
                })
                .collect(),
        ),
        Value::Call(call) => Value::Call(Call {
            function: call.function.clone(),
            positional: each(&call.positional),
            keywords: call
                .keywords
                .iter()
                .map(|(key, value)| (key.clone(), substitute(value, variable, item)))
                .collect(),
        }),
        Value::Sum(terms) => {
            let terms = each(terms);
            let joined: Option<String> = terms.iter().map(Value::as_str).collect();
            joined.map_or(Value::Sum(terms), Value::Str)
        }
        other => other.clone(),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Str(String),
    Int(i64),
    Name(String),
    Punct(char),
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    position: usize,
    error: Option<(usize, String)>,
    variables: HashMap<String, Value>,
}

type Parsed<T> = Result<T, (usize, String)>;

impl Parser {
    fn new(source: &str) -> Parser {
        let mut tokens = Vec::new();
        let mut error = None;
        let (mut rest, mut line) = (source, 1);
        while let Some(c) = rest.chars().next() {
            let mut length = c.len_utf8();
            match c {
                '\n' => line += 1,
                c if c.is_whitespace() => {}
                '#' => length = rest.find('\n').unwrap_or(rest.len()),
                '"' if rest.starts_with("\"\"\"") => {
                    // A docstring, verbatim up to the closing triple quote.
                    let Some(end) = rest[3..].find("\"\"\"") else {
                        error.get_or_insert((line, "unterminated docstring".to_owned()));
                        break;
                    };
                    tokens.push((Token::Str(rest[3..3 + end].to_owned()), line));
                    line += rest[3..3 + end].matches('\n').count();
                    length = end + 6;
                }
                '"' | '\'' => {
                    let mut text = String::new();
                    let mut chars = rest.char_indices().skip(1);
                    length = rest.len();
                    while let Some((index, next)) = chars.next() {
                        match next {
                            end if end == c => {
                                length = index + 1;
                                break;
                            }
                            '\\' => match chars.next() {
                                Some((_, 'n')) => text.push('\n'),
                                Some((_, 't')) => text.push('\t'),
                                Some((_, other)) => text.push(other),
                                None => {}
                            },
                            '\n' => break,
                            other => text.push(other),
                        }
                    }
                    if length == rest.len() {
                        error.get_or_insert((line, "unterminated string".to_owned()));
                        break;
                    }
                    tokens.push((Token::Str(text), line));
                }
                c if c.is_ascii_digit() => {
                    length = rest
                        .find(|d: char| !d.is_ascii_digit())
                        .unwrap_or(rest.len());
                    match rest[..length].parse() {
                        Ok(number) => tokens.push((Token::Int(number), line)),
                        Err(_) => {
                            error.get_or_insert((
                                line,
                                format!("number {} too large", &rest[..length]),
                            ));
                        }
                    }
                }
                c if c.is_alphabetic() || c == '_' => {
                    length = rest
                        .find(|n: char| !(n.is_alphanumeric() || n == '_' || n == '.'))
                        .unwrap_or(rest.len());
                    tokens.push((Token::Name(rest[..length].to_owned()), line));
                }
                '(' | ')' | '[' | ']' | '{' | '}' | ',' | '=' | ':' | '+' => {
                    tokens.push((Token::Punct(c), line));
                }
                other => {
                    error.get_or_insert((line, format!("unexpected character {other:?}")));
                }
            }
            rest = &rest[length..];
        }
        Parser {
            tokens,
            position: 0,
            error,
            variables: HashMap::new(),
        }
    }

    fn file(mut self) -> Parsed<Vec<Call>> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        let mut calls = Vec::new();
        while self.position < self.tokens.len() {
            // `name = value`: later uses of the name read the value.
            let variable = match (self.peek_at(0), self.peek_at(1)) {
                (Some(Token::Name(name)), Some(Token::Punct('='))) => Some(name.clone()),
                _ => None,
            };
            if variable.is_some() {
                self.position += 2;
            }
            let value = self.value()?;
            if let Some(name) = variable {
                self.variables.insert(name, value.clone());
            }
            match value {
                Value::Call(call) => calls.push(call),
                // A comprehension of rules.
                Value::List(items) => {
                    calls.extend(items.into_iter().filter_map(|item| match item {
                        Value::Call(call) => Some(call),
                        _ => None,
                    }))
                }
                _ => {}
            }
        }
        Ok(calls)
    }

    fn peek_at(&self, offset: usize) -> Option<&Token> {
        self.tokens
            .get(self.position + offset)
            .map(|(token, _)| token)
    }

    fn line(&self) -> usize {
        self.tokens
            .get(self.position.min(self.tokens.len().saturating_sub(1)))
            .map_or(0, |(_, line)| *line)
    }

    fn next(&mut self) -> Parsed<Token> {
        let token = self
            .peek_at(0)
            .cloned()
            .ok_or((self.line(), "unexpected end of file".to_owned()))?;
        self.position += 1;
        Ok(token)
    }

    fn eat(&mut self, punct: char) -> bool {
        let found = self.peek_at(0) == Some(&Token::Punct(punct));
        if found {
            self.position += 1;
        }
        found
    }

    fn expect(&mut self, punct: char) -> Parsed<()> {
        if self.eat(punct) {
            Ok(())
        } else {
            Err((
                self.line(),
                format!("expected {punct:?}, found {:?}", self.peek_at(0)),
            ))
        }
    }

    fn value(&mut self) -> Parsed<Value> {
        let mut terms = vec![self.term()?];
        while self.eat('+') {
            terms.push(self.term()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Value::Sum(terms)
        })
    }

    fn term(&mut self) -> Parsed<Value> {
        let line = self.line();
        match self.next()? {
            Token::Str(text) => Ok(Value::Str(text)),
            Token::Int(number) => Ok(Value::Int(number)),
            Token::Punct('[') => self.list(),
            Token::Punct('{') => Ok(Value::Dict(self.items('}', |parser| {
                let key = parser.value()?;
                parser.expect(':')?;
                Ok((key, parser.value()?))
            })?)),
            Token::Name(function) if self.eat('(') => {
                let mut call = Call {
                    function,
                    positional: Vec::new(),
                    keywords: Vec::new(),
                };
                for (keyword, value) in self.items(')', |parser| {
                    if let (Some(Token::Name(keyword)), Some(Token::Punct('='))) =
                        (parser.peek_at(0).cloned(), parser.peek_at(1))
                    {
                        parser.position += 2;
                        Ok((Some(keyword), parser.value()?))
                    } else {
                        Ok((None, parser.value()?))
                    }
                })? {
                    match keyword {
                        Some(keyword) => call.keywords.push((keyword, value)),
                        None => call.positional.push(value),
                    }
                }
                Ok(Value::Call(call))
            }
            Token::Name(name) => Ok(self
                .variables
                .get(&name)
                .cloned()
                .unwrap_or(Value::Name(name))),
            other => Err((line, format!("unexpected {other:?}"))),
        }
    }

    /// After `[`: a list, or a comprehension `[value for name in list]`, expanded (the
    /// name replaced by each string, sums of strings joined).
    fn list(&mut self) -> Parsed<Value> {
        if self.eat(']') {
            return Ok(Value::List(Vec::new()));
        }
        let first = self.value()?;
        if self.peek_at(0) != Some(&Token::Name("for".to_owned())) {
            let mut items = vec![first];
            if self.eat(',') {
                items.extend(self.items(']', Self::value)?);
            } else {
                self.expect(']')?;
            }
            return Ok(Value::List(items));
        }
        let line = self.line();
        self.position += 1;
        let (Token::Name(variable), Token::Name(keyword)) = (self.next()?, self.next()?) else {
            return Err((line, "expected `for NAME in`".to_owned()));
        };
        if keyword != "in" {
            return Err((line, format!("expected `in`, found {keyword}")));
        }
        let values = self.value()?;
        self.expect(']')?;
        Ok(Value::List(
            values
                .strings()
                .into_iter()
                .map(|item| substitute(&first, &variable, item))
                .collect(),
        ))
    }

    /// Comma-separated items up to `close` (a trailing comma allowed).
    fn items<T>(
        &mut self,
        close: char,
        mut item: impl FnMut(&mut Self) -> Parsed<T>,
    ) -> Parsed<Vec<T>> {
        let mut items = Vec::new();
        while !self.eat(close) {
            items.push(item(self)?);
            if !self.eat(',') {
                self.expect(close)?;
                break;
            }
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Parsed<Vec<Call>> {
        Parser::new(text).file()
    }

    #[test]
    fn parses_calls_assignments_and_values() {
        let calls = parse(
            r#"
"""A module docstring
over two lines."""
load("@rules_rust//rust:defs.bzl", "rust_library")  # a comment
crate = use_extension("@rules_rust//crate_universe:extensions.bzl", "crate")
crate.from_cargo(name = "crates", manifests = ["//:Cargo.toml"], n = 3)
rust_library(
    name = 'core',
    srcs = glob(["src/**/*.rs"], exclude = ["src/bin/*.rs"]) + ["extra.rs"],
    rustc_env = {"A": "b\"c"},
)
"#,
        )
        .expect("parses");
        let functions: Vec<&str> = calls.iter().map(|c| c.function.as_str()).collect();
        assert_eq!(
            functions,
            ["load", "use_extension", "crate.from_cargo", "rust_library"]
        );
        assert_eq!(calls[2].strings("manifests"), ["//:Cargo.toml"]);
        assert_eq!(calls[2].get("n"), Some(&Value::Int(3)));
        let library = &calls[3];
        assert_eq!(library.name(), Some("core"));
        let srcs = library.get("srcs").expect("srcs");
        assert_eq!(srcs.strings(), ["extra.rs"]);
        assert_eq!(srcs.calls()[0].strings("exclude"), ["src/bin/*.rs"]);
        assert_eq!(
            library.get("rustc_env").and_then(Value::string_pairs),
            Some(vec![("A", "b\"c")])
        );
    }

    #[test]
    fn expands_comprehensions_of_rules() {
        let calls = parse(
            r#"DEPS = ["//a"]
[rust_test(deps = DEPS + [":b"], name = t + "_test", srcs = ["tests/" + t + ".rs", "x.rs"]) for t in ["a", "b"]]"#,
        )
        .expect("parses");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].name(), Some("b_test"));
        assert_eq!(calls[1].strings("srcs"), ["tests/b.rs", "x.rs"]);
        assert_eq!(calls[1].strings("deps"), ["//a", ":b"]);
    }

    #[test]
    fn reports_the_line_of_a_syntax_error() {
        assert_eq!(parse("a(\n  b = [1,\n)").map_err(|(line, _)| line), Err(3));
        assert_eq!(parse("a(\"open\n)").map_err(|(line, _)| line), Err(1));
    }

    #[test]
    fn glob_matches_like_bazel() {
        let dir = std::env::temp_dir().join(format!("bazelcheck-glob-{}", std::process::id()));
        for file in [
            "src/lib.rs",
            "src/a/b.rs",
            "src/bin/x.rs",
            "tests/t.rs",
            "sub/BUILD.bazel",
            "sub/s.rs",
        ] {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, "").expect("write");
        }
        let found = glob(&dir, &["**/*.rs".into()], &["src/bin/**".into()]);
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(
            found.expect("glob"),
            ["src/a/b.rs", "src/lib.rs", "tests/t.rs"]
        );
    }
}
