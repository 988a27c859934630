//! The one control plane a test binary shares, started on first use and stopped when the
//! process exits.

use crate::ControlPlane;

/// The control plane shared by every test in this test binary, started on first use.
///
/// # Panics
/// When the control plane cannot start; the message names the failing component and
/// ends with its log. Every test of the binary then fails with the same message.
pub async fn shared() -> &'static ControlPlane {
    let started = SHARED
        .get_or_init(|| async {
            let result = ControlPlane::start()
                .await
                .map_err(|error| error.to_string());
            if result.is_ok() {
                stop_shared_at_exit();
            }
            result
        })
        .await;
    match started {
        Ok(control_plane) => control_plane,
        Err(error) => panic!("the test control plane failed to start: {error}"),
    }
}

static SHARED: tokio::sync::OnceCell<Result<ControlPlane, String>> =
    tokio::sync::OnceCell::const_new();

/// Statics are never dropped, so the shared control plane is stopped by an exit hook.
#[allow(unsafe_code)]
fn stop_shared_at_exit() {
    extern "C" fn stop_shared() {
        if let Some(Ok(control_plane)) = SHARED.get() {
            control_plane.shutdown();
        }
    }
    // SAFETY: registers a plain function with no captured state; atexit(3) only fails when
    // its table is full, and then the children still die with the process (PDEATHSIG).
    unsafe {
        libc::atexit(stop_shared);
    }
}
