//! Parses Kubernetes label selector strings (`app=web,tier in (a,b),!canary`) into
//! kube's [`Selector`], which matches them against cached objects' labels.

use std::collections::BTreeSet;

use kube::core::{Expression, Selector};

use setpoint_core::Error;
use setpoint_core::key::validate_name;

pub fn parse(text: &str) -> Result<Selector, Error> {
    split_requirements(text)?
        .into_iter()
        .map(|requirement| {
            parse_requirement(requirement).map_err(|reason| Error::InvalidSelector {
                selector: text.into(),
                reason: format!("requirement {requirement:?} {reason}"),
            })
        })
        .collect()
}

/// Splits on commas outside parentheses; empty input means "everything".
fn split_requirements(text: &str) -> Result<Vec<&str>, Error> {
    let mut requirements = Vec::new();
    let (mut depth, mut start) = (0u32, 0);
    for (index, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or_else(|| unbalanced(text, ')'))?,
            ',' if depth == 0 => {
                requirements.push(text[start..index].trim());
                start = index + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(unbalanced(text, '('));
    }
    let last = text[start..].trim();
    if !(last.is_empty() && requirements.is_empty()) {
        requirements.push(last);
    }
    Ok(requirements)
}

fn unbalanced(text: &str, parenthesis: char) -> Error {
    Error::InvalidSelector {
        selector: text.into(),
        reason: format!("unbalanced '{parenthesis}'"),
    }
}

fn parse_requirement(text: &str) -> Result<Expression, String> {
    if let Some(key) = text.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(label_key(key.trim())?));
    }
    for (operator, negated) in [(" notin ", true), (" in ", false)] {
        if let Some((key, values)) = text.split_once(operator) {
            let values = set_values(values.trim())?;
            let key = label_key(key.trim())?;
            return Ok(if negated {
                Expression::NotIn(key, values)
            } else {
                Expression::In(key, values)
            });
        }
    }
    for (operator, negated) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((key, value)) = text.split_once(operator) {
            let key = label_key(key.trim())?;
            let value = label_value(value.trim())?;
            return Ok(if negated {
                Expression::NotEqual(key, value)
            } else {
                Expression::Equal(key, value)
            });
        }
    }
    Ok(Expression::Exists(label_key(text)?))
}

fn set_values(text: &str) -> Result<BTreeSet<String>, String> {
    let inner = text
        .strip_prefix('(')
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or("needs a parenthesised value list, e.g. (a,b)")?;
    inner
        .split(',')
        .map(|value| label_value(value.trim()))
        .collect()
}

/// `[prefix/]name`: the prefix is a DNS subdomain, the name a label-like token.
fn label_key(key: &str) -> Result<String, String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|prefix| validate_name("prefix", prefix).is_ok());
    if !prefix_ok || !is_label_token(name) {
        return Err(format!("has an invalid label key {key:?}"));
    }
    Ok(key.into())
}

fn label_value(value: &str) -> Result<String, String> {
    if value.is_empty() || is_label_token(value) {
        Ok(value.into())
    } else {
        Err(format!("has an invalid label value {value:?}"))
    }
}

/// At most 63 of `A-Za-z0-9-_.`, alphanumeric at both ends.
fn is_label_token(token: &str) -> bool {
    let bytes = token.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kube::core::SelectorExt;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_operator_matches_like_kubernetes() {
        let web = labels(&[("app", "web"), ("tier", "front"), ("example.com/team", "a")]);
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app=db", false),
            ("tier in (front, back)", true),
            ("tier notin (front)", false),
            ("canary", false),
            ("!canary", true),
            ("example.com/team=a,app=web", true),
            ("app=web, tier in (back,db)", false),
        ];
        for (selector, expected) in cases {
            let parsed = parse(selector).unwrap_or_else(|error| panic!("{selector}: {error}"));
            assert_eq!(parsed.matches(&web), expected, "{selector}");
        }
    }

    #[test]
    fn malformed_selectors_are_invalid_arguments() {
        for selector in [
            "app=we b",
            "tier in front",
            "tier in (a",
            "a)",
            "=web",
            "app=-web",
            "Bad Key",
            "/app=web",
            "-a.b/app=web",
            ",",
            "app=web,",
        ] {
            assert!(
                matches!(parse(selector), Err(Error::InvalidSelector { .. })),
                "{selector} should be rejected"
            );
        }
    }
}

/// Any input: parsing never panics, and an accepted selector names only keys and values
/// that Kubernetes' own regular expressions accept (written out independently here).
#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use regex::Regex;

    use super::*;

    fn matches(pattern: &str, value: &str) -> bool {
        Regex::new(&format!("^{pattern}$"))
            .expect("a valid pattern")
            .is_match(value)
    }

    const NAME: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
    const SUBDOMAIN: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*";

    fn valid_key(key: &str) -> bool {
        let (prefix, name) = match key.split_once('/') {
            Some((prefix, name)) => (Some(prefix), name),
            None => (None, key),
        };
        prefix.is_none_or(|prefix| prefix.len() <= 253 && matches(SUBDOMAIN, prefix))
            && name.len() <= 63
            && matches(NAME, name)
    }

    fn valid_value(value: &str) -> bool {
        value.is_empty() || (value.len() <= 63 && matches(NAME, value))
    }

    proptest! {
        #[test]
        fn accepted_selectors_name_only_valid_keys_and_values(
            text in "(!?[a-z./_-]{0,6}(/[a-zA-Z0-9._/-]{0,5})?( ?(=|==|!=| in | notin ) ?[(]?[a-zA-Z0-9._ ,-]{0,6}[)]?)?,?){0,3}|\\PC{0,30}"
        ) {
            if parse(&text).is_ok() {
                for requirement in split_requirements(&text).expect("accepted") {
                    let expression = parse_requirement(requirement).expect("accepted");
                    let (key, values): (&String, Vec<&String>) = match &expression {
                        Expression::In(key, values) | Expression::NotIn(key, values) => {
                            (key, values.iter().collect())
                        }
                        Expression::Equal(key, value) | Expression::NotEqual(key, value) => {
                            (key, vec![value])
                        }
                        Expression::Exists(key) | Expression::DoesNotExist(key) => (key, vec![]),
                    };
                    prop_assert!(valid_key(key), "key {:?} of {:?} accepted", key, text);
                    for value in values {
                        prop_assert!(valid_value(value), "value {:?} of {:?} accepted", value, text);
                    }
                }
            }
        }
    }
}
