//! Authentication and authorization of every RPC, in one tower layer: the caller's
//! identity comes from its verified client certificate, the policy file decides which
//! RPCs that identity may call and in which namespaces, and writes are rate-limited per
//! identity. Anything not granted is denied. The handlers receive a [`Caller`] and apply
//! its namespace scope to the namespace a request names, which only they can read.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Deserialize;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Error;
use crate::limits::WriteLimiter;
use crate::reload::Shared;

/// The verified identity of a caller: its certificate's first URI SAN, else its CN.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientIdentity(pub String);

impl std::fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl ClientIdentity {
    pub fn from_certificate(der: &[u8]) -> Result<Self, Error> {
        let unauthenticated =
            |reason: String| Error::Unauthenticated(format!("client certificate: {reason}"));
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|error| unauthenticated(error.to_string()))?;
        let uri = cert
            .subject_alternative_name()
            .map_err(|error| unauthenticated(error.to_string()))?
            .and_then(|san| {
                san.value.general_names.iter().find_map(|name| match name {
                    GeneralName::URI(uri) => Some(uri.to_string()),
                    _ => None,
                })
            });
        let common_name = || {
            cert.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned)
        };
        uri.or_else(common_name)
            .filter(|identity| !identity.is_empty())
            .map(Self)
            .ok_or_else(|| unauthenticated("has neither a URI SAN nor a common name".into()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// ListDeployments, GetReplicas, health.
    Viewer,
    /// Everything a viewer may do, and SetReplicas.
    Operator,
}

/// What an RPC needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    Read,
    Write,
}

/// Every RPC the server answers, with the permission it needs. A path that is not
/// here is denied.
const METHODS: &[(&str, Permission)] = &[
    (
        "/setpoint.v1.ReplicaService/ListDeployments",
        Permission::Read,
    ),
    ("/setpoint.v1.ReplicaService/GetReplicas", Permission::Read),
    ("/setpoint.v1.ReplicaService/SetReplicas", Permission::Write),
    ("/grpc.health.v1.Health/Check", Permission::Read),
    ("/grpc.health.v1.Health/Watch", Permission::Read),
];

/// The RPC path if the server knows it, else `"unknown"`: keeps metric labels bounded.
pub fn method_label(path: &str) -> &'static str {
    METHODS
        .iter()
        .find(|(method, _)| *method == path)
        .map_or("unknown", |(method, _)| method)
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
}

/// The authorized caller, handed to the handlers in the request extensions.
#[derive(Clone, Debug)]
pub struct Caller {
    pub identity: ClientIdentity,
    pub scope: Scope,
}

impl Caller {
    pub fn of<T>(request: &tonic::Request<T>) -> Result<&Self, Error> {
        request
            .extensions()
            .get::<Self>()
            .ok_or_else(|| Error::Unauthenticated("no authorized caller".into()))
    }

    /// Allows access to `namespace`, or says why not.
    pub fn check(&self, namespace: &str) -> Result<(), Error> {
        if self.scope.allows(namespace) {
            return Ok(());
        }
        let error = Error::PermissionDenied(format!(
            "identity {} may not access namespace {namespace}",
            self.identity
        ));
        tracing::warn!(identity = %self.identity, namespace, %error, "request denied");
        Err(error)
    }
}

/// Identity → role and scope bindings, loaded from the policy file.
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
    pub fn parse(yaml: &str) -> Result<Self, String> {
        let file: PolicyFile = serde_saphyr::from_str(yaml).map_err(|error| error.to_string())?;
        let mut grants = HashMap::new();
        for binding in file.bindings {
            let scope = match binding.namespaces {
                None => Scope::All,
                Some(namespaces) => {
                    for namespace in &namespaces {
                        crate::validate::namespace(namespace).map_err(|error| error.to_string())?;
                    }
                    Scope::Only(Arc::new(namespaces))
                }
            };
            for identity in binding.identities {
                let grant = (binding.role, scope.clone());
                if let Some((previous, _)) = grants.insert(identity.clone(), grant) {
                    // One binding per identity keeps the policy easy to audit.
                    return Err(format!(
                        "identity {identity:?} is bound twice ({previous:?} and {:?})",
                        binding.role
                    ));
                }
            }
        }
        Ok(Self { grants })
    }

    pub fn load(path: &Path) -> Result<Self, Error> {
        let policy_error = |reason: String| Error::Policy {
            path: path.display().to_string(),
            reason,
        };
        let yaml =
            std::fs::read_to_string(path).map_err(|error| policy_error(error.to_string()))?;
        Self::parse(&yaml).map_err(policy_error)
    }

    /// Allows the call, with the permission it needs and the namespaces it may touch,
    /// or says why not.
    pub fn authorize(
        &self,
        identity: &ClientIdentity,
        path: &str,
    ) -> Result<(Permission, Scope), Error> {
        let required = METHODS
            .iter()
            .find(|(method, _)| *method == path)
            .map(|(_, permission)| *permission)
            .ok_or_else(|| Error::PermissionDenied(format!("method {path} is not allowed")))?;
        match (self.grants.get(&identity.0), required) {
            (Some((Role::Operator, scope)), _)
            | (Some((Role::Viewer, scope)), Permission::Read) => Ok((required, scope.clone())),
            (Some((role, _)), _) => Err(Error::PermissionDenied(format!(
                "identity {identity} (role {role:?}) may not call {path}"
            ))),
            (None, _) => Err(Error::PermissionDenied(format!(
                "identity {identity} (no role) may not call {path}"
            ))),
        }
    }
}

/// Tower layer that authorizes every request, limits each identity's writes, and hands
/// the [`Caller`] to the handlers through the request extensions.
#[derive(Clone)]
pub struct AuthorizationLayer {
    pub policy: Shared<Policy>,
    pub write_limiter: Arc<WriteLimiter>,
}

impl<S> tower::Layer<S> for AuthorizationLayer {
    type Service = Authorization<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorization {
            inner,
            policy: self.policy.clone(),
            write_limiter: self.write_limiter.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authorization<S> {
    inner: S,
    policy: Shared<Policy>,
    write_limiter: Arc<WriteLimiter>,
}

impl<S> Authorization<S> {
    fn identify<B>(request: &http::Request<B>) -> Result<ClientIdentity, Error> {
        let leaf = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs)
            .and_then(|certs: Arc<Vec<_>>| certs.first().cloned())
            .ok_or_else(|| Error::Unauthenticated("no verified client certificate".into()))?;
        ClientIdentity::from_certificate(&leaf)
    }
}

impl<S, B> tower::Service<http::Request<B>> for Authorization<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let method = request.uri().path();
        let decision = Self::identify(&request).and_then(|identity| {
            let allowed = self.policy.current().authorize(&identity, method).and_then(
                |(permission, scope)| {
                    if permission == Permission::Write {
                        self.write_limiter
                            .acquire(&identity, std::time::Instant::now())?;
                    }
                    Ok(scope)
                },
            );
            match allowed {
                Ok(scope) => Ok(Caller { identity, scope }),
                Err(error) => {
                    tracing::warn!(%identity, method, %error, "request denied");
                    Err(error)
                }
            }
        });
        match decision {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Err(error) => {
                if matches!(error, Error::Unauthenticated(_)) {
                    tracing::warn!(method, %error, "request denied");
                }
                let status = tonic::Status::from(error);
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
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
    const LIST: &str = "/setpoint.v1.ReplicaService/ListDeployments";
    const GET: &str = "/setpoint.v1.ReplicaService/GetReplicas";
    const SET: &str = "/setpoint.v1.ReplicaService/SetReplicas";

    fn identity(name: &str) -> ClientIdentity {
        ClientIdentity(name.into())
    }

    #[test]
    fn operator_may_call_everything() {
        let policy = Policy::parse(POLICY).expect("valid policy");
        for method in [LIST, GET, SET, "/grpc.health.v1.Health/Check"] {
            assert!(
                policy
                    .authorize(&identity("spiffe://setpoint.dev/operator"), method)
                    .is_ok()
            );
        }
    }

    #[test]
    fn writes_are_told_apart_from_reads() {
        let policy = Policy::parse(POLICY).expect("valid policy");
        let operator = identity("spiffe://setpoint.dev/operator");
        let permission = |path| policy.authorize(&operator, path).ok().map(|(p, _)| p);
        assert_eq!(permission(SET), Some(Permission::Write));
        assert_eq!(permission(GET), Some(Permission::Read));
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
        let (_, scope) = policy
            .authorize(&identity("pipeline"), SET)
            .expect("operator");
        assert!(scope.allows("team-a") && scope.allows("team-a-staging"));
        assert!(!scope.allows("team-b"));
        let (_, scope) = policy.authorize(&identity("admin"), SET).expect("operator");
        assert_eq!(scope, Scope::All);

        let caller = Caller {
            identity: identity("pipeline"),
            scope: Scope::Only(Arc::new(["team-a".into()].into())),
        };
        assert!(caller.check("team-a").is_ok());
        let denied = caller.check("team-b").expect_err("out of scope");
        assert_eq!(
            denied.to_string(),
            "identity pipeline may not access namespace team-b"
        );
        assert!(matches!(denied, Error::PermissionDenied(_)));
    }

    #[test]
    fn viewer_cannot_set_replicas() {
        let policy = Policy::parse(POLICY).expect("valid policy");
        let viewer = identity("dashboard");
        assert!(policy.authorize(&viewer, LIST).is_ok());
        assert!(policy.authorize(&viewer, GET).is_ok());
        let denied = policy
            .authorize(&viewer, SET)
            .expect_err("viewer may not set");
        assert!(
            matches!(&denied, Error::PermissionDenied(message) if message.contains("Viewer")),
            "{denied}"
        );
    }

    #[test]
    fn unknown_identities_and_methods_are_denied() {
        let policy = Policy::parse(POLICY).expect("valid policy");
        assert!(matches!(
            policy.authorize(&identity("spiffe://setpoint.dev/intruder"), LIST),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            policy.authorize(
                &identity("spiffe://setpoint.dev/operator"),
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
            ),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            Policy::default().authorize(&identity("spiffe://setpoint.dev/operator"), GET),
            Err(Error::PermissionDenied(_))
        ));
    }

    #[test]
    fn bad_policies_are_rejected() {
        assert!(Policy::parse("bindings: [{role: admin, identities: [a]}]").is_err());
        assert!(Policy::parse("bindings: [{role: viewer, identites: [a]}]").is_err());
        let bad_namespace =
            Policy::parse("bindings: [{role: viewer, identities: [a], namespaces: [Team_A]}]")
                .expect_err("not a namespace name");
        assert!(bad_namespace.contains("Team_A"), "{bad_namespace}");
        assert!(
            Policy::parse(
                "bindings: [{role: viewer, identities: [a]}, {role: operator, identities: [a]}]"
            )
            .is_err()
        );
    }

    #[test]
    fn identity_is_the_uri_san_else_the_common_name() {
        let ca = devpki::Authority::generate("test-ca", devpki::DEFAULT_VALIDITY).expect("ca");
        let pem_to_der = |pem: &str| {
            x509_parser::pem::parse_x509_pem(pem.as_bytes())
                .expect("pem")
                .1
                .contents
        };
        let with_uri = ca
            .issue(
                &devpki::Subject::client("alice", devpki::DEFAULT_VALIDITY)
                    .with_uri("spiffe://setpoint.dev/alice"),
            )
            .expect("cert");
        assert_eq!(
            ClientIdentity::from_certificate(&pem_to_der(&with_uri.cert_pem)).ok(),
            Some(identity("spiffe://setpoint.dev/alice"))
        );
        let cn_only = ca
            .issue(&devpki::Subject::client("bob", devpki::DEFAULT_VALIDITY))
            .expect("cert");
        assert_eq!(
            ClientIdentity::from_certificate(&pem_to_der(&cn_only.cert_pem)).ok(),
            Some(identity("bob"))
        );
        assert!(matches!(
            ClientIdentity::from_certificate(b"not a certificate"),
            Err(Error::Unauthenticated(_))
        ));
    }
}
