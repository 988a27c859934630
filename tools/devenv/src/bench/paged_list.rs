//! The API server's own time to list every Deployment: the requests the server's
//! Deployment watch sends for its first list (kube's, with `watcher::Config::any_semantic`:
//! pages of 500 from the API server's cache), built by kube from the same parameters,
//! as the admin, reading nothing of each page but `metadata.continue`: no objects are
//! decoded, so the figure is the API server's and the transfer. It is the baseline of
//! the server's start-up, which has to list every Deployment too before it is ready.

use std::time::{Duration, Instant};

use k8s_openapi::serde::Deserialize;
use kube::Client;
use kube::api::ListParams;

/// Deployments per page (kube's watcher's page size).
pub(crate) const PAGE: u32 = 500;

/// What is read of a page: only its continue token ("" on the last page).
#[derive(Deserialize)]
#[serde(crate = "k8s_openapi::serde")]
struct Page {
    #[serde(default)]
    metadata: ListMeta,
}

#[derive(Deserialize, Default)]
#[serde(crate = "k8s_openapi::serde")]
struct ListMeta {
    #[serde(default, rename = "continue")]
    next: String,
}

/// From the first page's request to the last page's body.
pub(crate) async fn time(admin: &Client) -> anyhow::Result<Duration> {
    let request = kube::core::Request::new("/apis/apps/v1/deployments");
    let started = Instant::now();
    let mut params = ListParams::default().match_any().limit(PAGE);
    loop {
        let text = admin.request_text(request.list(&params)?).await?;
        let next = serde_json::from_str::<Page>(&text)?.metadata.next;
        if next.is_empty() {
            return Ok(started.elapsed());
        }
        params.continue_token = Some(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_continue_token_is_read() {
        let page = r#"{"kind":"DeploymentList","metadata":{"resourceVersion":"7","continue":"eyJ2Ij=="},"items":[{"metadata":{"name":"a"}}]}"#;
        let page: Page = serde_json::from_str(page).unwrap();
        assert_eq!(page.metadata.next, "eyJ2Ij==");
        let last: Page = serde_json::from_str(r#"{"metadata":{},"items":[]}"#).unwrap();
        assert_eq!(last.metadata.next, "");
    }
}
