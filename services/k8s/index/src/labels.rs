//! A Deployment's labels in one shared allocation: every row holds a set, and a
//! `BTreeMap` of two labels costs a 500-byte node where this costs their text.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Between pairs; no label key or value can contain it.
const SEPARATOR: char = '\0';

/// Labels sorted by key, as `key=value` pairs in one string (a label key has no `=`).
/// Cheap to clone: the text is shared.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Labels(Option<Arc<str>>);

impl Labels {
    /// The value of label `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter()
            .find_map(|(name, value)| (name == key).then_some(value))
    }

    /// `(key, value)` in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs()
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
    }

    /// `key=value` in key order.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = &str> {
        self.0
            .as_deref()
            .into_iter()
            .flat_map(|text| text.split(SEPARATOR))
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Labels {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let sorted: BTreeMap<String, String> = pairs
            .into_iter()
            .map(|(key, value)| (key.as_ref().into(), value.as_ref().into()))
            .collect();
        Self::from(&sorted)
    }
}

impl From<&BTreeMap<String, String>> for Labels {
    fn from(labels: &BTreeMap<String, String>) -> Self {
        if labels.is_empty() {
            return Self(None);
        }
        let mut text = String::new();
        for (key, value) in labels {
            if !text.is_empty() {
                text.push(SEPARATOR);
            }
            text.extend([key.as_str(), "=", value.as_str()]);
        }
        Self(Some(text.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_keep_every_pair_in_key_order_and_find_each() {
        let labels: Labels = [("tier", "a"), ("app", "web"), ("empty", "")]
            .into_iter()
            .collect();
        assert_eq!(
            labels.iter().collect::<Vec<_>>(),
            [("app", "web"), ("empty", ""), ("tier", "a")]
        );
        assert_eq!(labels.get("tier"), Some("a"));
        assert_eq!(labels.get("empty"), Some(""));
        assert_eq!(labels.get("ap"), None, "a key is matched whole");
        assert_eq!(Labels::default().iter().count(), 0);
        assert_eq!(Labels::from(&BTreeMap::new()), Labels::default());
    }
}
