//! Who is calling and what they may touch: the verified [`ClientIdentity`], the
//! [`Role`] a policy binds it to, the [`Permission`] an RPC needs and the namespace
//! [`Scope`] of a binding, handed to the domain as one [`Caller`].

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Deserialize;

use crate::{AUDIT, Error};

/// The verified identity of a caller, in one of two namespaces that cannot collide: the
/// first URI SAN of its certificate (`spiffe://…`), or, for a certificate without one, its
/// common name, written `cn:<name>`. A common name that spells a URI is still a common
/// name: it matches only a `cn:` binding.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientIdentity {
    Uri(String),
    CommonName(String),
}

impl ClientIdentity {
    /// An identity as a policy writes it: `cn:<name>`, or an absolute URI (a scheme
    /// other than `cn`, then `:`).
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(name) = text.strip_prefix("cn:") {
            return if name.is_empty() {
                Err("`cn:` names no common name".into())
            } else {
                Ok(Self::CommonName(name.into()))
            };
        }
        Self::uri(text)
    }

    /// A URI identity; refuses text that is not an absolute URI, or whose scheme is `cn`
    /// (it would read as a common name).
    pub fn uri(text: &str) -> Result<Self, String> {
        let scheme = text.split_once(':').map(|(scheme, _)| scheme);
        let valid = scheme.is_some_and(|scheme| {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        });
        match scheme {
            _ if !valid => Err(format!(
                "{text:?} is neither a URI (such as spiffe://example.org/ci) nor cn:<common name>"
            )),
            Some(scheme) if scheme.eq_ignore_ascii_case("cn") => Err(format!(
                "{text:?}: a URI with the scheme cn would read as a common name"
            )),
            _ => Ok(Self::Uri(text.into())),
        }
    }
}

impl std::fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Uri(uri) => f.write_str(uri),
            Self::CommonName(name) => write!(f, "cn:{name}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: ListDeployments, WatchDeployments, GetReplicas, health.
    Viewer,
    /// Everything a viewer may do, and writes: SetReplicas, ReleaseDeployment.
    Operator,
}

impl Role {
    pub fn grants(self, permission: Permission) -> bool {
        match self {
            Self::Operator => true,
            Self::Viewer => permission == Permission::Read,
        }
    }
}

/// What an RPC needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    Read,
    Write,
}

/// The namespaces a binding grants its role in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Only(Arc<BTreeSet<String>>),
}

impl Scope {
    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(namespaces) => namespaces.contains(namespace),
        }
    }

    /// The binding lists `namespace` by name (not merely "every namespace").
    pub fn names(&self, namespace: &str) -> bool {
        matches!(self, Self::Only(namespaces) if namespaces.contains(namespace))
    }
}

/// An authorized caller: who it is and where its role applies.
#[derive(Clone, Debug)]
pub struct Caller {
    pub identity: ClientIdentity,
    pub scope: Scope,
}

impl Caller {
    /// Allows access to `namespace`, or says why not.
    pub fn check(&self, namespace: &str) -> Result<(), Error> {
        if self.scope.allows(namespace) {
            return Ok(());
        }
        self.denied(Error::OutOfScope {
            identity: self.identity.clone(),
            namespace: namespace.into(),
        })
    }

    /// Allows a write in `namespace`: in scope and, where the namespace is `protected`,
    /// named by the caller's binding; or says why not.
    pub fn check_write(&self, namespace: &str, protected: &BTreeSet<String>) -> Result<(), Error> {
        self.check(namespace)?;
        if !protected.contains(namespace) || self.scope.names(namespace) {
            return Ok(());
        }
        self.denied(Error::ProtectedNamespace {
            identity: self.identity.clone(),
            namespace: namespace.into(),
        })
    }

    /// Logs a denial in the audit log and returns it.
    fn denied(&self, error: Error) -> Result<(), Error> {
        tracing::warn!(target: AUDIT, identity = %self.identity, %error, "request denied");
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scoped_caller_reaches_only_its_namespaces() {
        let caller = Caller {
            identity: ClientIdentity::CommonName("pipeline".into()),
            scope: Scope::Only(Arc::new(["team-a".into()].into())),
        };
        assert!(caller.check("team-a").is_ok());
        let denied = caller.check("team-b").expect_err("out of scope");
        assert_eq!(
            denied.to_string(),
            "identity cn:pipeline may not access namespace team-b"
        );
        assert!(matches!(denied, Error::OutOfScope { .. }));
    }

    #[test]
    fn protected_namespaces_take_a_binding_that_names_them() {
        let protected = BTreeSet::from(["kube-system".to_owned()]);
        let everywhere = Caller {
            identity: ClientIdentity::CommonName("admin".into()),
            scope: Scope::All,
        };
        assert!(everywhere.check_write("team-a", &protected).is_ok());
        assert!(matches!(
            everywhere.check_write("kube-system", &protected),
            Err(Error::ProtectedNamespace { .. })
        ));
        let named = Caller {
            identity: ClientIdentity::CommonName("platform".into()),
            scope: Scope::Only(Arc::new(protected.clone())),
        };
        assert!(named.check_write("kube-system", &protected).is_ok());
        assert!(matches!(
            named.check_write("team-a", &protected),
            Err(Error::OutOfScope { .. })
        ));
    }

    #[test]
    fn viewers_read_and_operators_also_write() {
        assert!(Role::Viewer.grants(Permission::Read));
        assert!(!Role::Viewer.grants(Permission::Write));
        assert!(Role::Operator.grants(Permission::Write));
    }
}
