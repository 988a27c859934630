//! The commands that talk to the server, by what they do: `read` (list, get), `write`
//! (set, with its wait, and release) and `watch`.

pub mod read;
pub mod watch;
pub mod write;

use anyhow::bail;
use setpoint_proto::v1::DeploymentRef;

/// A Deployment given as NAMESPACE/NAME.
fn parse_ref(text: &str) -> anyhow::Result<DeploymentRef> {
    let Some((namespace, name)) = text.split_once('/') else {
        bail!("expected NAMESPACE/NAME, got {text:?}");
    };
    Ok(DeploymentRef {
        namespace: namespace.into(),
        name: name.into(),
    })
}
