//! The authorization policy: which identity has which role, in which namespaces. Loaded
//! from YAML; anything it does not bind is denied. Identities are URIs or `cn:<name>`
//! ([`ClientIdentity::parse`]).

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
    #[error("binding for {role:?}: {reason}")]
    Identity { role: Role, reason: String },
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
    grants: HashMap<ClientIdentity, (Role, Scope)>,
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
            for text in binding.identities {
                let identity =
                    ClientIdentity::parse(&text).map_err(|reason| PolicyError::Identity {
                        role: binding.role,
                        reason,
                    })?;
                let grant = (binding.role, scope.clone());
                if let Some((first, _)) = grants.insert(identity, grant) {
                    return Err(PolicyError::BoundTwice {
                        identity: text,
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
        match self.grants.get(identity) {
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
    identities: [spiffe://setpoint.dev/viewer, cn:dashboard]
";
    const SET: &str = "/setpoint.v1.ReplicaService/SetReplicas";

    fn identity(text: &str) -> ClientIdentity {
        ClientIdentity::parse(text).expect("an identity")
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
        let viewer = identity("cn:dashboard");
        assert!(policy.authorize(&viewer, "read", Permission::Read).is_ok());
        let denied = policy
            .authorize(&viewer, SET, Permission::Write)
            .expect_err("viewer may not set");
        assert_eq!(
            denied.to_string(),
            format!("identity cn:dashboard (role Viewer) may not call {SET}")
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
    identities: [cn:pipeline]
    namespaces: [team-a, team-a-staging]
  - role: operator
    identities: [cn:admin]
",
        )
        .expect("valid policy");
        let scope = policy
            .authorize(&identity("cn:pipeline"), SET, Permission::Write)
            .expect("operator");
        assert!(scope.allows("team-a") && scope.allows("team-a-staging"));
        assert!(!scope.allows("team-b"));
        let scope = policy
            .authorize(&identity("cn:admin"), SET, Permission::Write)
            .expect("operator");
        assert_eq!(scope, Scope::All);
    }

    #[test]
    fn uri_and_common_name_identities_never_match_each_other() {
        let policy = Policy::parse(
            "
bindings:
  - role: operator
    identities: [spiffe://setpoint.dev/operator]
  - role: viewer
    identities: [cn:spiffe://setpoint.dev/viewer]
",
        )
        .expect("valid policy");
        let spelled_as_cn = ClientIdentity::CommonName("spiffe://setpoint.dev/operator".into());
        assert!(
            policy
                .authorize(&spelled_as_cn, SET, Permission::Read)
                .is_err()
        );
        let spelled_as_uri = ClientIdentity::Uri("spiffe://setpoint.dev/viewer".into());
        assert!(
            policy
                .authorize(&spelled_as_uri, SET, Permission::Read)
                .is_err()
        );
        let viewer = ClientIdentity::CommonName("spiffe://setpoint.dev/viewer".into());
        assert!(policy.authorize(&viewer, SET, Permission::Read).is_ok());
    }

    #[test]
    fn identities_are_uris_or_common_names_by_prefix() {
        for (text, problem) in [
            ("dashboard", "neither a URI"),
            ("cn:", "names no common name"),
            ("CN:admin", "would read as a common name"),
            ("1x://a", "neither a URI"),
        ] {
            let refused = Policy::parse(&format!(
                "bindings: [{{role: viewer, identities: [\"{text}\"]}}]"
            ))
            .expect_err(text);
            assert!(refused.to_string().contains(problem), "{text}: {refused}");
        }
    }

    #[test]
    fn bad_policies_are_rejected() {
        assert!(matches!(
            Policy::parse("bindings: [{role: admin, identities: [cn:a]}]"),
            Err(PolicyError::Syntax(_))
        ));
        assert!(matches!(
            Policy::parse("bindings: [{role: viewer, identites: [cn:a]}]"),
            Err(PolicyError::Syntax(_))
        ));
        let bad_namespace =
            Policy::parse("bindings: [{role: viewer, identities: [cn:a], namespaces: [Team_A]}]")
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
                "bindings: [{role: viewer, identities: [cn:a]}, {role: operator, identities: [cn:a]}]"
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
                    vec("cn:[a-c]{1,2}|spiffe://[a-c]{1,2}|\\PC{0,8}", 0..3),
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
