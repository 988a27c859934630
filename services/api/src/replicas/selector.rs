//! Kubernetes label selectors (`app=web,tier in (a,b),!canary`): parsed from their
//! text, and matched against the index's labels as Kubernetes matches them.

use std::collections::BTreeSet;

use setpoint_core::Error;
use setpoint_core::key::validate_name;
use setpoint_k8s_index::Labels;

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    Exists(String),
    DoesNotExist(String),
    Equal(String, String),
    /// Also met without the label, as in Kubernetes.
    NotEqual(String, String),
    In(String, BTreeSet<String>),
    /// Also met without the label, as in Kubernetes.
    NotIn(String, BTreeSet<String>),
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        match self {
            Self::Exists(key) => labels.get(key).is_some(),
            Self::DoesNotExist(key) => labels.get(key).is_none(),
            Self::Equal(key, value) => labels.get(key) == Some(value),
            Self::NotEqual(key, value) => labels.get(key) != Some(value),
            Self::In(key, values) => labels.get(key).is_some_and(|value| values.contains(value)),
            Self::NotIn(key, values) => labels.get(key).is_none_or(|value| !values.contains(value)),
        }
    }
}

/// Every requirement must be met; none: everything is selected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

impl Selector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|requirement| requirement.matches(labels))
    }

    /// The `(key, value)` labels every selected Deployment carries: what the index
    /// narrows a listing with.
    pub fn required_labels(&self) -> Vec<(&str, &str)> {
        self.0
            .iter()
            .filter_map(|requirement| match requirement {
                Requirement::Equal(key, value) => Some((key.as_str(), value.as_str())),
                Requirement::In(key, values) if values.len() == 1 => {
                    values.first().map(|value| (key.as_str(), value.as_str()))
                }
                _ => None,
            })
            .collect()
    }
}

pub fn parse(text: &str) -> Result<Selector, Error> {
    split_requirements(text)?
        .into_iter()
        .map(|requirement| {
            parse_requirement(requirement).map_err(|reason| Error::InvalidSelector {
                selector: text.into(),
                reason: format!("requirement {requirement:?} {reason}"),
            })
        })
        .collect::<Result<_, _>>()
        .map(Selector)
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

fn parse_requirement(text: &str) -> Result<Requirement, String> {
    if let Some(key) = text.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(label_key(key.trim())?));
    }
    for (operator, negated) in [(" notin ", true), (" in ", false)] {
        if let Some((key, values)) = text.split_once(operator) {
            let values = set_values(values.trim())?;
            let key = label_key(key.trim())?;
            return Ok(if negated {
                Requirement::NotIn(key, values)
            } else {
                Requirement::In(key, values)
            });
        }
    }
    for (operator, negated) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((key, value)) = text.split_once(operator) {
            let key = label_key(key.trim())?;
            let value = label_value(value.trim())?;
            return Ok(if negated {
                Requirement::NotEqual(key, value)
            } else {
                Requirement::Equal(key, value)
            });
        }
    }
    Ok(Requirement::Exists(label_key(text)?))
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
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().copied().collect()
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
            ("canary!=yes", true),
            ("canary notin (yes)", true),
            ("canary in (yes)", false),
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
    fn equalities_and_single_value_sets_are_required_labels() {
        let selector = parse("app=web,tier in (a),zone in (x,y),team!=b,canary").expect("valid");
        assert_eq!(selector.required_labels(), [("app", "web"), ("tier", "a")]);
        assert!(parse("").expect("valid").required_labels().is_empty());
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
                        Requirement::In(key, values) | Requirement::NotIn(key, values) => {
                            (key, values.iter().collect())
                        }
                        Requirement::Equal(key, value) | Requirement::NotEqual(key, value) => {
                            (key, vec![value])
                        }
                        Requirement::Exists(key) | Requirement::DoesNotExist(key) => (key, vec![]),
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
