//! Input validation for API requests: Kubernetes names, replica bounds and paging.
//! Plain functions, so every rule is unit-tested without a server.

use setpoint_api::v1::DeploymentRef;

use crate::Error;

/// Page size when the request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page a caller may ask for.
pub const MAX_PAGE_SIZE: usize = 500;

/// A validated `namespace/name` of a Deployment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeploymentKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for DeploymentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl DeploymentKey {
    pub fn from_request(deployment: Option<&DeploymentRef>) -> Result<Self, Error> {
        let deployment =
            deployment.ok_or_else(|| Error::InvalidArgument("deployment is required".into()))?;
        namespace(&deployment.namespace)?;
        subdomain("deployment name", &deployment.name)?;
        Ok(Self {
            namespace: deployment.namespace.clone(),
            name: deployment.name.clone(),
        })
    }
}

/// A namespace is a DNS-1123 label: at most 63 of `a-z0-9-`, alphanumeric at both ends.
pub fn namespace(value: &str) -> Result<(), Error> {
    if is_dns1123_label(value) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "namespace {value:?} is not a valid DNS-1123 label (lowercase letters, digits and \
             '-', at most 63 characters, starting and ending with a letter or digit)"
        )))
    }
}

/// An object name is a DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn subdomain(what: &str, value: &str) -> Result<(), Error> {
    if value.len() <= 253 && value.split('.').all(is_dns1123_label) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} {value:?} is not a valid DNS-1123 subdomain (lowercase letters, digits, \
             '-' and '.', at most 253 characters)"
        )))
    }
}

fn is_dns1123_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

pub fn replicas(value: i32, max: i32) -> Result<(), Error> {
    if (0..=max).contains(&value) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "replicas must be between 0 and {max}, got {value}"
        )))
    }
}

pub fn page_size(value: i32) -> Result<usize, Error> {
    match usize::try_from(value) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) if size <= MAX_PAGE_SIZE => Ok(size),
        _ => Err(Error::InvalidArgument(format!(
            "page_size must be between 0 and {MAX_PAGE_SIZE}, got {value}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(namespace: &str, name: &str) -> Result<DeploymentKey, Error> {
        DeploymentKey::from_request(Some(&DeploymentRef {
            namespace: namespace.into(),
            name: name.into(),
        }))
    }

    #[test]
    fn valid_names_are_accepted() {
        assert!(key("default", "web").is_ok());
        assert!(key("team-a", "web.v2-canary").is_ok());
        assert!(key(&"a".repeat(63), &[&"b".repeat(63)[..]; 3].join(".")).is_ok());
    }

    #[test]
    fn invalid_names_are_rejected_with_the_field_named() {
        for (namespace, name, field) in [
            ("", "web", "namespace"),
            ("Team", "web", "namespace"),
            ("team.a", "web", "namespace"),
            ("-team", "web", "namespace"),
            (&"a".repeat(64), "web", "namespace"),
            ("default", "", "deployment name"),
            ("default", "Web", "deployment name"),
            ("default", "web_1", "deployment name"),
            ("default", "web.", "deployment name"),
            ("default", &"a".repeat(254), "deployment name"),
        ] {
            let error = key(namespace, name).expect_err(name);
            assert!(
                matches!(&error, Error::InvalidArgument(message) if message.starts_with(field)),
                "{namespace}/{name}: {error}"
            );
        }
        assert!(DeploymentKey::from_request(None).is_err());
    }

    #[test]
    fn replicas_are_bounded() {
        assert!(replicas(0, 1000).is_ok());
        assert!(replicas(1000, 1000).is_ok());
        assert!(replicas(-1, 1000).is_err());
        assert!(replicas(1001, 1000).is_err());
    }

    #[test]
    fn page_size_defaults_and_is_bounded() {
        assert_eq!(page_size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(7).ok(), Some(7));
        assert_eq!(page_size(500).ok(), Some(500));
        assert!(page_size(501).is_err());
        assert!(page_size(-1).is_err());
    }
}
