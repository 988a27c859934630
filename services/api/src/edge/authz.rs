//! Authentication and authorization of every RPC, in one tower layer: the caller's
//! identity comes from its verified client certificate ([`crate::identity`]), the
//! method's permission from [`crate::methods`], the decision from the policy. Anything
//! not granted is denied. The handlers get
//! the [`Caller`] in the request extensions; the identity is recorded in the RPC's span
//! ([`crate::access`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use setpoint_core::{AUDIT, Caller, Error, Policy};

use crate::edge::{identity, methods};
use crate::runtime::reload::Shared;

/// Tower layer that authorizes every request and hands the [`Caller`] to the handlers
/// through the request extensions.
#[derive(Clone)]
pub struct AuthorizationLayer {
    pub policy: Shared<Policy>,
}

impl<S> tower::Layer<S> for AuthorizationLayer {
    type Service = Authorization<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorization {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authorization<S> {
    inner: S,
    layer: AuthorizationLayer,
}

impl AuthorizationLayer {
    fn authorize<B>(&self, request: &http::Request<B>) -> Result<Caller, Error> {
        let path = request.uri().path();
        let identity = identity::of_request(request)?;
        tracing::Span::current().record("identity", identity.to_string());
        let (_, permission) =
            methods::lookup(path).ok_or_else(|| Error::UnknownMethod(path.into()))?;
        let scope = self
            .policy
            .current()
            .authorize(&identity, path, permission)?;
        Ok(Caller { identity, scope })
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
        match self.layer.authorize(&request) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Err(error) => {
                tracing::warn!(target: AUDIT, %error, "request denied");
                let status = tonic::Status::from(crate::Error::from(error));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}
