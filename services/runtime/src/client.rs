//! The Kubernetes client, whose requests count in `setpoint_kube_requests_total
//! {component}`: that is how tests prove that reads never make one.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tower::util::MapRequestLayer;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    pub component: &'static str,
}

/// A kube client whose requests count under `component` (`api` or `reconciler`), in a
/// counter registered in `registry`.
pub fn counted(
    config: kube::Config,
    registry: &mut Registry,
    component: &'static str,
) -> Result<kube::Client, kube::Error> {
    let family = Family::<ComponentLabels, Counter>::default();
    registry.register(
        "kube_requests",
        "HTTP requests sent to the Kubernetes API server (watches included), by component: api (index, writes, health) or reconciler (index, Lease, controller, health)",
        family.clone(),
    );
    let requests = family.get_or_create(&ComponentLabels { component }).clone();
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&MapRequestLayer::new(move |request| {
            requests.inc();
            request
        }))
        .build())
}
