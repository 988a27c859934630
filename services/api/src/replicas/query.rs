//! What a listing or a watch selects, parsed once for both: the namespace (empty for
//! all) and label selector the caller sent, within the namespaces its scope allows, and
//! a fingerprint of the three that page and resume tokens are bound to. Page tokens are
//! here too: an opaque cursor bound to its query.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use setpoint_core::key::{validate_name, validate_namespace};
use setpoint_core::{Caller, DeploymentKey, Error, Scope};
use sha2::{Digest, Sha256};

use setpoint_k8s_index::Labels;

use crate::replicas::selector::{self, Selector};

/// Which Deployments a listing or a watch sees.
pub struct Query {
    /// Empty for all namespaces (that `scope` allows).
    pub namespace: String,
    pub selector: Selector,
    pub scope: Scope,
    /// Of the namespace, selector and scope: a token is valid only for the same.
    pub fingerprint: String,
}

impl Query {
    /// The query `caller` asks for; refuses an invalid namespace or selector, and a
    /// namespace outside the caller's scope.
    pub fn parse(caller: &Caller, namespace: String, label_selector: &str) -> Result<Self, Error> {
        if !namespace.is_empty() {
            validate_namespace(&namespace)?;
            caller.check(&namespace)?;
        }
        Ok(Self {
            selector: selector::parse(label_selector)?,
            fingerprint: fingerprint(&namespace, label_selector, &caller.scope),
            namespace,
            scope: caller.scope.clone(),
        })
    }

    /// Whether the Deployment `key` with `labels` is selected.
    pub fn sees(&self, key: &DeploymentKey, labels: &Labels) -> bool {
        (self.namespace.is_empty() || self.namespace == key.namespace)
            && self.scope.allows(&key.namespace)
            && self.selector.matches(labels)
    }

    /// The namespaces to visit: `None` for all of them.
    pub fn namespaces(&self) -> Option<BTreeSet<String>> {
        match &self.scope {
            _ if !self.namespace.is_empty() => Some(BTreeSet::from_iter(
                self.scope
                    .allows(&self.namespace)
                    .then(|| self.namespace.clone()),
            )),
            Scope::All => None,
            Scope::Only(namespaces) => Some((**namespaces).clone()),
        }
    }
}

/// What a token is bound to: the namespace and selector of its query and the caller's
/// scope, so that a token continues only the listing or watch it came from. A digest, not
/// a secret: a forged token only moves the cursor of the caller's own query.
fn fingerprint(namespace: &str, label_selector: &str, scope: &Scope) -> String {
    let scope = match scope {
        Scope::All => "*".to_owned(),
        Scope::Only(namespaces) => namespaces.iter().cloned().collect::<Vec<_>>().join(","),
    };
    let digest = Sha256::digest(format!("{namespace}\n{label_selector}\n{scope}"));
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The opaque token of the page after `after`, for the query `fingerprint`.
pub fn encode_page_token(fingerprint: &str, after: &DeploymentKey) -> String {
    URL_SAFE_NO_PAD.encode(format!("{fingerprint}:{after}"))
}

/// Where the page of `token` starts, if it was issued for the query `fingerprint`.
pub fn decode_page_token(token: &str, fingerprint: &str) -> Result<Option<DeploymentKey>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Error::InvalidPageToken;
    let text = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(invalid)?;
    let (bound, key) = text.split_once(':').ok_or_else(invalid)?;
    if bound != fingerprint {
        return Err(Error::PageTokenOfAnotherQuery);
    }
    let (namespace, name) = key.split_once('/').ok_or_else(invalid)?;
    validate_namespace(namespace).map_err(|_| invalid())?;
    validate_name("name", name).map_err(|_| invalid())?;
    Ok(Some(DeploymentKey {
        namespace: namespace.into(),
        name: name.into(),
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn garbage_page_tokens_are_invalid_arguments() {
        for token in ["%%%", "bm8tc2xhc2g", &URL_SAFE_NO_PAD.encode("Bad/NAME")] {
            assert!(
                matches!(decode_page_token(token, "q"), Err(Error::InvalidPageToken)),
                "{token}"
            );
        }
        assert_eq!(decode_page_token("", "q").ok(), Some(None));
    }

    #[test]
    fn a_page_token_continues_only_its_own_query() {
        let after = DeploymentKey::new("a", "web").expect("key");
        let scoped = Scope::Only(Arc::new(["a".into()].into()));
        let queries = [
            fingerprint("a", "", &Scope::All),
            fingerprint("", "", &Scope::All),
            fingerprint("a", "app=web", &Scope::All),
            fingerprint("a", "", &scoped),
        ];
        for (index, query) in queries.iter().enumerate() {
            let token = encode_page_token(query, &after);
            for (other_index, other) in queries.iter().enumerate() {
                let decoded = decode_page_token(&token, other);
                if index == other_index {
                    assert_eq!(decoded, Ok(Some(after.clone())));
                } else {
                    assert_eq!(decoded, Err(Error::PageTokenOfAnotherQuery));
                }
            }
        }
    }
}

/// Any token: decoding never panics, and an accepted token names a valid key and is the
/// one token encoding it (no two tokens continue the same page).
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn accepted_page_tokens_are_canonical_and_name_valid_keys(
            token in "[A-Za-z0-9_-]{0,40}|\\PC{0,20}",
            text in "q:[a-z0-9./-]{0,12}|q:\\PC{0,12}|\\PC{0,16}",
        ) {
            for token in [token, URL_SAFE_NO_PAD.encode(&text)] {
                if let Ok(Some(key)) = decode_page_token(&token, "q") {
                    prop_assert!(DeploymentKey::new(&key.namespace, &key.name).is_ok(), "{} accepted", key);
                    prop_assert_eq!(encode_page_token("q", &key), token);
                }
            }
        }
    }
}
