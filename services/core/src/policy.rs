//! The authorization policy: which identity has which role, in which namespaces. Loaded
//! from YAML; anything it does not bind is denied.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::Deserialize;

use crate::Error;
use crate::access::{ClientIdentity, Permission, Role, Scope};
use crate::key::validate_namespace;

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("not a valid policy: {0}")]
    Syntax(#[source] Box<serde_saphyr::Error>),
    #[error("binding for {role:?}: {source}")]
    Namespace {
        role: Role,
        #[source]
        source: Box<Error>,
    },
    /// One binding per identity keeps the policy easy to audit.
    #[error("identity {identity:?} is bound twice ({first:?} and {second:?})")]
    BoundTwice {
        identity: String,
        first: Role,
        second: Role,
    },
}

/// Identity → role and scope bindings.
#[derive(Debug, Default, PartialEq)]
pub struct Policy {
    grants: HashMap<String, (Role, Scope)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    bindings: Vec<Binding>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Binding {
    role: Role,
    identities: Vec<String>,
    /// Absent: every namespace.
    namespaces: Option<BTreeSet<String>>,
}

impl Policy {
    pub fn parse(yaml: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile =
            serde_saphyr::from_str(yaml).map_err(|error| PolicyError::Syntax(Box::new(error)))?;
        let mut grants = HashMap::new();
        for binding in file.bindings {
            let scope = match binding.namespaces {
                None => Scope::All,
                Some(namespaces) => {
                    for namespace in &namespaces {
                        validate_namespace(namespace).map_err(|source| PolicyError::Namespace {
                            role: binding.role,
                            source: Box::new(source),
                        })?;
                    }
                    Scope::Only(Arc::new(namespaces))
                }
            };
            for identity in binding.identities {
                let grant = (binding.role, scope.clone());
                if let Some((first, _)) = grants.insert(identity.clone(), grant) {
                    return Err(PolicyError::BoundTwice {
                        identity,
                        first,
                        second: binding.role,
                    });
                }
            }
        }
        Ok(Self { grants })
    }

    /// The scope in which `identity` may call `method`, which needs `required`, or why
    /// it may not.
    pub fn authorize(
        &self,
        identity: &ClientIdentity,
        method: &str,
        required: Permission,
    ) -> Result<Scope, Error> {
        match self.grants.get(&identity.0) {
            Some((role, scope)) if role.grants(required) => Ok(scope.clone()),
            grant => Err(Error::NotPermitted {
                identity: identity.clone(),
                role: grant.map(|(role, _)| *role),
                method: method.into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "
bindings:
  - role: operator
    identities: [spiffe://setpoint.dev/operator]
  - role: viewer
    identities: [spiffe://setpoint.dev/viewer, dashboard]
";
    const SET: &str = "/setpoint.v1.ReplicaService/SetReplicas";

    fn identity(name: &str) -> ClientIdentity {
        ClientIdentity(name.into())
    }

    #[test]
    fn operator_may_read_and_write() {
        let policy = Policy::parse(POLICY).expect("valid policy");
        let operator = identity("spiffe://setpoint.dev/operator");
        for permission in [Permission::Read, Permission::Write] {
            assert_eq!(
                policy.authorize(&operator, SET, permission).ok(),
                Some(Scope::All)
            );
        }
    }

    #[test]
    fn viewer_cannot_set_replicas() {
        let policy = Policy::parse(POLICY).expect("valid policy");
        let viewer = identity("dashboard");
        assert!(policy.authorize(&viewer, "read", Permission::Read).is_ok());
        let denied = policy
            .authorize(&viewer, SET, Permission::Write)
            .expect_err("viewer may not set");
        assert_eq!(
            denied.to_string(),
            format!("identity dashboard (role Viewer) may not call {SET}")
        );
    }

    #[test]
    fn unknown_identities_are_denied() {
        let policy = Policy::parse(POLICY).expect("valid policy");
        let intruder = identity("spiffe://setpoint.dev/intruder");
        let denied = policy
            .authorize(&intruder, SET, Permission::Read)
            .expect_err("no binding");
        assert!(
            matches!(&denied, Error::NotPermitted { role: None, .. }),
            "{denied}"
        );
        assert!(denied.to_string().contains("(no role)"), "{denied}");
        assert!(
            Policy::default()
                .authorize(&intruder, SET, Permission::Read)
                .is_err()
        );
    }

    #[test]
    fn bindings_may_be_scoped_to_namespaces() {
        let policy = Policy::parse(
            "
bindings:
  - role: operator
    identities: [pipeline]
    namespaces: [team-a, team-a-staging]
  - role: operator
    identities: [admin]
",
        )
        .expect("valid policy");
        let scope = policy
            .authorize(&identity("pipeline"), SET, Permission::Write)
            .expect("operator");
        assert!(scope.allows("team-a") && scope.allows("team-a-staging"));
        assert!(!scope.allows("team-b"));
        let scope = policy
            .authorize(&identity("admin"), SET, Permission::Write)
            .expect("operator");
        assert_eq!(scope, Scope::All);
    }

    #[test]
    fn bad_policies_are_rejected() {
        assert!(matches!(
            Policy::parse("bindings: [{role: admin, identities: [a]}]"),
            Err(PolicyError::Syntax(_))
        ));
        assert!(matches!(
            Policy::parse("bindings: [{role: viewer, identites: [a]}]"),
            Err(PolicyError::Syntax(_))
        ));
        let bad_namespace =
            Policy::parse("bindings: [{role: viewer, identities: [a], namespaces: [Team_A]}]")
                .expect_err("not a namespace name");
        assert!(
            matches!(&bad_namespace, PolicyError::Namespace { .. }),
            "{bad_namespace}"
        );
        assert!(
            bad_namespace.to_string().contains("Team_A"),
            "{bad_namespace}"
        );
        assert!(matches!(
            Policy::parse(
                "bindings: [{role: viewer, identities: [a]}, {role: operator, identities: [a]}]"
            ),
            Err(PolicyError::BoundTwice { .. })
        ));
    }
}

/// Any input: parsing never panics, and an accepted policy binds each identity once and
/// only to valid namespaces.
#[cfg(test)]
mod properties {
    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;

    use super::*;

    /// A generated binding: role, identities, namespaces.
    type Binding = (String, Vec<String>, Option<Vec<String>>);

    /// A policy file's text from generated bindings (JSON strings are YAML strings).
    fn render(bindings: &[Binding]) -> String {
        let quote = |value: &String| serde_json::to_string(value).expect("a string");
        let mut yaml = String::from("bindings:\n");
        for (role, identities, namespaces) in bindings {
            let list = |values: &[String]| values.iter().map(quote).collect::<Vec<_>>().join(", ");
            yaml += &format!(
                "  - role: {}\n    identities: [{}]\n",
                quote(role),
                list(identities)
            );
            if let Some(namespaces) = namespaces {
                yaml += &format!("    namespaces: [{}]\n", list(namespaces));
            }
        }
        yaml
    }

    proptest! {
        #[test]
        fn parsing_any_text_never_panics(text in "\\PC{0,200}|bindings:[ -~\n]{0,200}") {
            let _ = Policy::parse(&text);
        }

        #[test]
        fn an_accepted_policy_binds_once_and_only_valid_namespaces(
            bindings in vec(
                (
                    "viewer|operator|admin|Viewer|",
                    vec("[a-c]{1,2}|\\PC{0,8}", 0..3),
                    option::of(vec("[a-z0-9-]{0,4}|[A-Z._ ]{1,3}|\\PC{0,8}", 0..3)),
                ),
                0..4,
            )
        ) {
            let parsed = Policy::parse(&render(&bindings));
            let identities: Vec<&String> = bindings.iter().flat_map(|(_, identities, _)| identities).collect();
            if let Ok(policy) = parsed {
                let distinct: BTreeSet<&String> = identities.iter().copied().collect();
                prop_assert_eq!(distinct.len(), identities.len(), "an identity bound twice was accepted");
                prop_assert_eq!(policy.grants.len(), identities.len());
                for (_, scope) in policy.grants.values() {
                    if let Scope::Only(namespaces) = scope {
                        for namespace in namespaces.iter() {
                            prop_assert!(validate_namespace(namespace).is_ok(), "{:?} accepted", namespace);
                        }
                    }
                }
            }
        }
    }
}
