//! Deployment keys and the validation of everything a request names: Kubernetes names,
//! replica bounds and page sizes. Plain functions, so every rule is unit-tested without
//! a server.

use crate::error::{Error, NameRule};

/// Page size when the request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page a caller may ask for.
pub const MAX_PAGE_SIZE: usize = 500;

/// A validated `namespace/name` of a Deployment (and of its setpoint, which shares it).
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
    pub fn new(namespace: &str, name: &str) -> Result<Self, Error> {
        validate_namespace(namespace)?;
        validate_name("deployment name", name)?;
        Ok(Self {
            namespace: namespace.into(),
            name: name.into(),
        })
    }
}

/// A namespace is a DNS-1123 label: at most 63 of `a-z0-9-`, alphanumeric at both ends.
pub fn validate_namespace(value: &str) -> Result<(), Error> {
    if is_dns1123_label(value) {
        Ok(())
    } else {
        Err(Error::InvalidName {
            field: "namespace",
            value: value.into(),
            rule: NameRule::Dns1123Label,
        })
    }
}

/// An object name is a DNS-1123 subdomain: at most 253 characters of dot-separated
/// parts like labels (Kubernetes does not limit the parts' length).
pub fn validate_name(field: &'static str, value: &str) -> Result<(), Error> {
    if value.len() <= 253 && value.split('.').all(is_label_like) {
        Ok(())
    } else {
        Err(Error::InvalidName {
            field,
            value: value.into(),
            rule: NameRule::Dns1123Subdomain,
        })
    }
}

fn is_dns1123_label(value: &str) -> bool {
    value.len() <= 63 && is_label_like(value)
}

/// `a-z0-9-`, alphanumeric at both ends, of any length but 0.
fn is_label_like(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

pub fn validate_replicas(value: i32, max: i32) -> Result<(), Error> {
    if (0..=max).contains(&value) {
        Ok(())
    } else {
        Err(Error::ReplicasOutOfRange { value, max })
    }
}

/// The page size a request asks for; 0 means the default.
pub fn page_size(value: i32) -> Result<usize, Error> {
    match usize::try_from(value) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) if size <= MAX_PAGE_SIZE => Ok(size),
        _ => Err(Error::PageSizeOutOfRange {
            value,
            max: MAX_PAGE_SIZE,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_are_accepted() {
        assert!(DeploymentKey::new("default", "web").is_ok());
        assert!(DeploymentKey::new("team-a", "web.v2-canary").is_ok());
        assert!(DeploymentKey::new(&"a".repeat(63), &[&"b".repeat(63)[..]; 3].join(".")).is_ok());
        assert!(
            DeploymentKey::new("default", &format!("{}.v2", "b".repeat(64))).is_ok(),
            "a Kubernetes name's parts may be longer than a label"
        );
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
            let error = DeploymentKey::new(namespace, name).expect_err(name);
            assert!(
                matches!(&error, Error::InvalidName { field: named, .. } if *named == field),
                "{namespace}/{name}: {error}"
            );
            assert!(error.to_string().starts_with(field), "{error}");
        }
    }

    #[test]
    fn replicas_are_bounded() {
        assert!(validate_replicas(0, 1000).is_ok());
        assert!(validate_replicas(1000, 1000).is_ok());
        assert!(validate_replicas(-1, 1000).is_err());
        assert_eq!(
            validate_replicas(1001, 1000)
                .expect_err("too many")
                .to_string(),
            "replicas must be between 0 and 1000, got 1001"
        );
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

/// Any input: validation never panics, and accepts exactly what Kubernetes' own
/// regular expressions accept (written out independently here).
#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use regex::Regex;

    use super::*;

    const LABEL: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";

    fn matches(pattern: &str, value: &str) -> bool {
        Regex::new(&format!("^{pattern}$"))
            .expect("a valid pattern")
            .is_match(value)
    }

    proptest! {
        #[test]
        fn namespaces_are_dns1123_labels(
            value in "[a-z0-9]{60,66}|[a-z0-9A-Z.\\-_ ]{0,70}|\\PC{0,10}"
        ) {
            let label = value.len() <= 63 && matches(LABEL, &value);
            prop_assert_eq!(validate_namespace(&value).is_ok(), label);
        }

        #[test]
        fn names_are_dns1123_subdomains(
            value in "([a-z0-9-]{0,70}[.]?){0,5}|[a-z0-9]{60,70}([.][a-z]{1,3})?|[a-z0-9.-]{240,260}|\\PC{0,20}"
        ) {
            let subdomain = value.len() <= 253 && matches(&format!("{LABEL}([.]{LABEL})*"), &value);
            prop_assert_eq!(validate_name("name", &value).is_ok(), subdomain);
        }

        #[test]
        fn replicas_and_page_sizes_stay_in_range(
            replicas in prop_oneof![any::<i32>(), -5..=1005i32],
            max in 0..=1000i32,
            size in prop_oneof![any::<i32>(), -5..=1005i32],
        ) {
            prop_assert_eq!(
                validate_replicas(replicas, max).is_ok(),
                0 <= replicas && replicas <= max
            );
            let expected = match size {
                0 => Some(DEFAULT_PAGE_SIZE),
                1..=500 => usize::try_from(size).ok(),
                _ => None,
            };
            prop_assert_eq!(page_size(size).ok(), expected);
        }
    }
}
