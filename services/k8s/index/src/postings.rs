//! The rows of each label pair in key order: a selector's equality requirements narrow
//! a page to the rows of the rarest, so a selector matching one Deployment in a
//! thousand visits those, not the thousand. Entries are the rows the table holds (one
//! pointer each), so the index never copies a row.

use std::collections::HashMap;
use std::sync::Arc;

use crate::deployments::DeploymentRow;

/// Rows by `key=value`, each list in key order.
#[derive(Default)]
pub(crate) struct LabelIndex(HashMap<Box<str>, Vec<Arc<DeploymentRow>>>);

impl LabelIndex {
    /// Moves a row's entries from its `old` version to its `new` one (`None`: absent).
    pub(crate) fn update(&mut self, old: Option<&DeploymentRow>, new: Option<&Arc<DeploymentRow>>) {
        if let Some(old) = old {
            for pair in old.labels.pairs() {
                if new.is_none_or(|new| !new.labels.pairs().any(|kept| kept == pair)) {
                    self.remove(pair, old);
                }
            }
        }
        if let Some(new) = new {
            for pair in new.labels.pairs() {
                self.insert(pair, new);
            }
        }
    }

    /// The rows carrying the rarest of `required`, or `None` if one has none.
    pub(crate) fn rarest(&self, required: &[(&str, &str)]) -> Option<&[Arc<DeploymentRow>]> {
        required
            .iter()
            .map(|(key, value)| self.0.get(format!("{key}={value}").as_str()))
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .min_by_key(|rows| rows.len())
            .map(Vec::as_slice)
    }

    /// Adds `row` under `pair`, or replaces its older version there.
    fn insert(&mut self, pair: &str, row: &Arc<DeploymentRow>) {
        let Some(rows) = self.0.get_mut(pair) else {
            self.0.insert(pair.into(), vec![row.clone()]);
            return;
        };
        match rows.binary_search_by(|entry| entry.key.cmp(&row.key)) {
            Ok(at) => rows[at] = row.clone(),
            Err(at) => rows.insert(at, row.clone()),
        }
    }

    fn remove(&mut self, pair: &str, row: &DeploymentRow) {
        let Some(rows) = self.0.get_mut(pair) else {
            return;
        };
        if let Ok(at) = rows.binary_search_by(|entry| entry.key.cmp(&row.key)) {
            rows.remove(at);
        }
        if rows.is_empty() {
            self.0.remove(pair);
        }
    }
}
