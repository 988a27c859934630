//! A parser for the Starlark subset the repository's Bazel files use: top-level calls and
//! assignments; strings, integers, names, lists (and comprehensions of them), dicts,
//! calls and `+`. Assigned names are replaced by their values and comprehensions are
//! expanded; nothing else is evaluated.

use std::collections::HashMap;

use crate::{Call, Value};

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Str(String),
    Int(i64),
    Name(String),
    Punct(char),
}

pub(crate) struct Parser {
    tokens: Vec<(Token, usize)>,
    position: usize,
    error: Option<(usize, String)>,
    variables: HashMap<String, Value>,
}

type Parsed<T> = Result<T, (usize, String)>;

impl Parser {
    pub(crate) fn new(source: &str) -> Parser {
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

    pub(crate) fn file(mut self) -> Parsed<Vec<Call>> {
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
}
