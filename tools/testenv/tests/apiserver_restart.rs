//! Stops and restarts the API server, so it runs in a test binary of its own.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

#[tokio::test]
async fn clients_and_watches_recover_after_an_apiserver_restart() -> anyhow::Result<()> {
    let control_plane = testenv::shared().await;
    let namespace = control_plane.namespace("restart").await?;
    let config_maps = Api::<ConfigMap>::namespaced(control_plane.admin_client().await?, &namespace);
    config_maps
        .create(&PostParams::default(), &config_map("before"))
        .await?;
    let mut names = watcher(config_maps.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .map_ok(|config_map| config_map.metadata.name.unwrap_or_default())
        .boxed();
    assert_eq!(names.try_next().await?.as_deref(), Some("before"));

    control_plane.stop_apiserver();
    let down = config_maps.get("before").await;
    assert!(
        down.is_err(),
        "a request must fail while the API server is down"
    );

    control_plane.start_apiserver().await?;
    // The same client reconnects, and the data survived in etcd.
    assert_eq!(
        config_maps.get("before").await?.metadata.name.as_deref(),
        Some("before")
    );
    config_maps
        .create(&PostParams::default(), &config_map("after"))
        .await?;
    // The watch may report errors while it re-lists (e.g. 410 Expired after the
    // restart); it keeps going, and must eventually deliver the new object.
    let seen = tokio::time::timeout(testenv::WAIT_TIMEOUT, async {
        while let Some(event) = names.next().await {
            if event.is_ok_and(|name| name == "after") {
                return true;
            }
        }
        false
    })
    .await?;
    assert!(
        seen,
        "the watch resumed and saw the object created after the restart"
    );
    Ok(())
}
