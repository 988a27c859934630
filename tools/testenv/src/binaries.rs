//! Where the control plane's binaries come from: a directory named by the environment
//! (Bazel), or `tools/controlplane/build.sh`, which builds them into its cache.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::Error;

/// The directory holding etcd, kube-apiserver and kube-controller-manager:
/// `$SETPOINT_CONTROLPLANE_DIR` if set (under Bazel, the `@controlplane` repository's),
/// else what `tools/controlplane/build.sh` builds (a no-op when the pinned versions are
/// in the cache).
pub(crate) async fn locate_binaries() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("SETPOINT_CONTROLPLANE_DIR") {
        return Ok(dir.into());
    }
    if std::env::var_os("TEST_SRCDIR").is_some() {
        // Under `bazel test` the checkout (and the build script) is out of reach.
        return Err(Error::Build {
            script: "tools/controlplane/build.sh".into(),
            reason: "under Bazel, the test target needs CONTROLPLANE_DATA and \
                     CONTROLPLANE_ENV (tools/bazel/controlplane.bzl)"
                .into(),
        });
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../controlplane/build.sh");
    let build_error = |reason: String| Error::Build {
        script: script.clone(),
        reason,
    };
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .await
        .map_err(|error| build_error(error.to_string()))?;
    if !output.status.success() {
        return Err(build_error(format!("exited with {}", output.status)));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    ))
}
