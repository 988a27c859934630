//! The index's Prometheus metrics, registered where (and under which prefix) the
//! process chooses.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone)]
pub struct IndexMetrics {
    pub objects: Family<KindLabels, Gauge>,
    pub watch_restarts: Family<KindLabels, Counter>,
}

impl IndexMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            objects: Family::default(),
            watch_restarts: Family::default(),
        };
        registry.register(
            "cache_objects",
            "Objects held in the watch cache by kind",
            metrics.objects.clone(),
        );
        registry.register(
            "watch_restarts",
            "Watch errors after which the watch restarted, by kind",
            metrics.watch_restarts.clone(),
        );
        metrics
    }
}
