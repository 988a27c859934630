//! Values loaded from files and reloaded when the files change: the TLS configuration
//! and the authorization policy. A change that fails to load is logged and the previous
//! value stays in force, so a bad edit never leaves the server without one.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use crate::Error;

/// A value that readers share and a reloader replaces.
pub struct Shared<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Shared<T> {
    pub fn new(value: T) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(value))))
    }

    pub fn current(&self) -> Arc<T> {
        // A writer only swaps an Arc, so a poisoned lock still holds a whole value.
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, value: T) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(value);
    }
}

/// Loads `T` from `files`, then keeps it current: every `interval` it re-reads the files
/// and reloads when their contents changed. Content, not mtime: Kubernetes updates
/// mounted Secrets and ConfigMaps by swapping a symlink.
pub struct Reloader<T> {
    what: &'static str,
    files: Arc<[PathBuf]>,
    load: Arc<dyn Fn() -> Result<T, Error> + Send + Sync>,
    shared: Shared<T>,
    fingerprint: u64,
    failures: Counter,
}

impl<T: Send + Sync + 'static> Reloader<T> {
    pub fn new(
        what: &'static str,
        files: Vec<PathBuf>,
        load: impl Fn() -> Result<T, Error> + Send + Sync + 'static,
        failures: Counter,
    ) -> Result<Self, Error> {
        let fingerprint = fingerprint(&files);
        let shared = Shared::new(load()?);
        Ok(Self {
            what,
            files: files.into(),
            load: Arc::new(load),
            shared,
            fingerprint,
            failures,
        })
    }

    pub fn shared(&self) -> Shared<T> {
        self.shared.clone()
    }

    /// Polls the files until the task is dropped. File reads and loading run on the
    /// blocking pool, off the async runtime.
    pub async fn run(mut self, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let (files, load) = (self.files.clone(), self.load.clone());
            let current = self.fingerprint;
            let reloaded = tokio::task::spawn_blocking(move || {
                let now = fingerprint(&files);
                (now != current).then(|| (now, load()))
            })
            .await;
            let (current, loaded) = match reloaded {
                Ok(Some(changed)) => changed,
                Ok(None) => continue,
                Err(error) => {
                    tracing::error!(what = self.what, %error, "reading the files failed");
                    continue;
                }
            };
            match loaded {
                Ok(value) => {
                    self.shared.replace(value);
                    self.fingerprint = current;
                    tracing::info!(what = self.what, "reloaded");
                }
                // Keep the fingerprint, so the next tick tries again.
                Err(error) => {
                    self.failures.inc();
                    tracing::error!(what = self.what, %error, "reload failed; keeping the previous version");
                }
            }
        }
    }
}

fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for file in files {
        std::fs::read(file).ok().hash(&mut hasher);
    }
    hasher.finish()
}
