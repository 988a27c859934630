//! One WatchDeployments stream: validates and authorizes the request, takes a watch
//! slot, and sends the watch's start (the current state or the changes after a resume
//! token), SYNCED, then the live changes its query sees, until the caller goes away,
//! the server stops, the policy changes what the caller may see, the watch reaches its
//! age or falls behind.

use std::net::SocketAddr;
use std::sync::Arc;

use setpoint_core::{Caller, Error as Domain, Permission, Policy};
use tokio::sync::{broadcast, mpsc};
use tracing::Instrument;

use crate::Error;
use crate::replicas::query::Query;
use crate::replicas::view::DeploymentView;
use crate::runtime::reload::Shared;
use crate::watch::hub::{Change, FANOUT_BUFFER, Hub, Seen, Start};
use crate::watch::limits::WatchLimits;

/// The method whose permission a watcher keeps needing.
const WATCH_METHOD: &str = "/setpoint.v1.ReplicaService/WatchDeployments";
/// Messages queued for one watcher's connection: a few, since the watch's task builds
/// the next one as soon as there is room, and every watcher holds its queue.
const WATCH_BUFFER: usize = 8;
/// How often a watcher's access is checked against the current policy.
const RECHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// What WatchDeployments asks for, as the caller sent it.
#[derive(Debug, Default)]
pub struct WatchRequest {
    /// Empty for all namespaces.
    pub namespace: String,
    pub label_selector: String,
    /// Empty to start from the current state.
    pub resume_token: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Initial,
    Synced,
    Changed,
    Deleted,
}

/// One message of a watch: small, because every watcher queues a few.
#[derive(Debug)]
pub struct WatchEvent {
    pub kind: EventKind,
    /// The Deployment's change; `None` for [`EventKind::Synced`].
    pub change: Option<Arc<Change>>,
    pub resume_token: String,
}

impl WatchEvent {
    /// What the API shows of the Deployment, built as the message is sent.
    pub fn view(&self) -> Option<DeploymentView> {
        self.change.as_deref().map(Change::view)
    }
}

/// Everything watchers share.
#[derive(Clone)]
pub struct Watchers {
    pub hub: Hub,
    pub limits: Arc<WatchLimits>,
    pub policy: Shared<Policy>,
    /// Becomes true when the server starts draining: watches end then.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// A watch ends after this long (`--max-connection-age`), so that its connection can
    /// close and clients rebalance and present fresh certificates; clients resume.
    pub max_age: std::time::Duration,
}

impl Watchers {
    /// Validates and authorizes the request, takes a watch slot and starts a task that
    /// sends the watch's events, ending with an error or when the caller goes away.
    pub fn watch(
        &self,
        caller: Caller,
        request: WatchRequest,
        connection: Option<SocketAddr>,
    ) -> Result<mpsc::Receiver<Result<WatchEvent, Error>>, Error> {
        let query = Query::parse(&caller, request.namespace, &request.label_selector)?;
        let slot = self.limits.acquire(&caller, connection)?;
        let start = self.hub.start(&query, &request.resume_token)?;
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        let watchers = self.clone();
        tokio::spawn(
            async move {
                let _slot = slot;
                if let Err(error) = watchers.forward(&caller, &query, start, &sender).await {
                    tracing::info!(%error, "watch ended");
                    // A client that reads nothing may never take it.
                    let _ = tokio::time::timeout(RECHECK_INTERVAL, sender.send(Err(error))).await;
                }
            }
            .in_current_span(),
        );
        Ok(receiver)
    }

    /// Sends the start (each event built as it is sent), SYNCED, then the live changes
    /// the filter sees; `Ok` when the caller has gone away. While a send waits for the
    /// client, stopping, policy changes, the watch's age and falling behind still end it.
    async fn forward(
        &self,
        caller: &Caller,
        query: &Query,
        start: Start,
        sender: &mpsc::Sender<Result<WatchEvent, Error>>,
    ) -> Result<(), Error> {
        let Start {
            replay,
            snapshot,
            seq,
            mut live,
        } = start;
        let token = |seq| self.hub.token(seq, &query.fingerprint);
        let event = |kind, change: &Arc<Change>, resume_token| WatchEvent {
            kind,
            change: Some(change.clone()),
            resume_token,
        };
        let seen = |change: &Arc<Change>| match change.seen_by(query) {
            Some(Seen::Changed) => Some(event(EventKind::Changed, change, token(change.seq))),
            Some(Seen::Left) => Some(event(EventKind::Deleted, change, token(change.seq))),
            None => None,
        };
        let mut replay = replay.into_iter();
        let mut synced = false;
        let mut pending = None;
        let mut stop = self.stop.clone();
        let mut recheck = tokio::time::interval(RECHECK_INTERVAL);
        let expires = tokio::time::sleep(self.max_age);
        tokio::pin!(expires);
        loop {
            if pending.is_none() {
                pending = match replay.next() {
                    // The current state has no place to resume from until SYNCED.
                    Some(change) if snapshot => {
                        Some(event(EventKind::Initial, &change, String::new()))
                    }
                    Some(change) => seen(&change),
                    None if !synced => {
                        synced = true;
                        Some(WatchEvent {
                            kind: EventKind::Synced,
                            change: None,
                            resume_token: token(seq),
                        })
                    }
                    None => None,
                };
            }
            tokio::select! {
                () = sender.closed() => return Ok(()),
                _ = stop.wait_for(|stop| *stop) => return Err(Domain::ShuttingDown.into()),
                () = &mut expires => return Err(Domain::WatchExpired.into()),
                _ = recheck.tick() => {
                    self.reauthorize(caller)?;
                    // Stuck behind a client that does not read.
                    if live.len() > FANOUT_BUFFER {
                        return Err(Domain::WatchLagged { behind: live.len() as u64 }.into());
                    }
                }
                permit = sender.reserve(), if pending.is_some() => match (permit, pending.take()) {
                    (Ok(permit), Some(event)) => permit.send(Ok(event)),
                    _ => return Ok(()),
                },
                change = live.recv(), if pending.is_none() && synced => {
                    pending = match change {
                        Ok(change) if change.seq > seq => seen(&change),
                        Ok(_) => None,
                        Err(broadcast::error::RecvError::Lagged(behind)) => {
                            return Err(Domain::WatchLagged { behind }.into());
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            return Err(Domain::ShuttingDown.into());
                        }
                    };
                }
            }
        }
    }

    /// The caller still may watch, with the namespaces it started with.
    fn reauthorize(&self, caller: &Caller) -> Result<(), Error> {
        let scope =
            self.policy
                .current()
                .authorize(&caller.identity, WATCH_METHOD, Permission::Read)?;
        if scope == caller.scope {
            Ok(())
        } else {
            Err(Domain::ScopeChanged.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use setpoint_core::{ClientIdentity, Scope};

    use super::*;
    use crate::watch::hub::tests::{app, key, synced};

    fn watchers(hub: &Hub) -> (Watchers, tokio::sync::watch::Sender<bool>) {
        let policy =
            Policy::parse("bindings: [{role: viewer, identities: [spiffe://x]}]").expect("policy");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let watchers = Watchers {
            hub: hub.clone(),
            limits: Arc::new(WatchLimits::new(10, 10)),
            policy: Shared::new(policy),
            stop: stopped,
            max_age: std::time::Duration::from_secs(3600),
        };
        (watchers, stop)
    }

    fn viewer() -> Caller {
        Caller {
            identity: ClientIdentity::Uri("spiffe://x".into()),
            scope: Scope::All,
        }
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_dropped_with_its_place_to_resume() {
        let changes = synced();
        changes.publish(&key("web"), app("web", 0, "web"));
        let (watchers, _stop) = watchers(&changes);
        let mut events = watchers
            .watch(viewer(), WatchRequest::default(), None)
            .expect("watch");
        // The watcher reads nothing while more changes come than its queue and the
        // fan-out buffer hold.
        for replicas in 1..=(WATCH_BUFFER + FANOUT_BUFFER + 10) as i32 {
            changes.publish(&key("web"), app("web", replicas, "web"));
            tokio::task::yield_now().await;
        }
        let mut received = Vec::new();
        let error = loop {
            match events.recv().await.expect("an event or the error") {
                Ok(event) => received.push(event),
                Err(error) => break error,
            }
        };
        assert!(
            matches!(error, Error::Domain(Domain::WatchLagged { .. })),
            "{error}"
        );
        assert!(error.to_string().contains("too slowly"), "{error}");
        assert_eq!(
            received[..2].iter().map(|e| e.kind).collect::<Vec<_>>(),
            [EventKind::Initial, EventKind::Synced]
        );
        assert!(
            received.len() <= WATCH_BUFFER + 2,
            "bounded: {}",
            received.len()
        );
        assert!(events.recv().await.is_none(), "the watch ended");
        assert!(
            watchers.limits.open.lock().expect("lock").0.is_empty(),
            "its slot is free"
        );
    }

    #[tokio::test]
    async fn watches_end_when_the_server_stops() {
        let changes = synced();
        let (watchers, stop) = watchers(&changes);
        let mut events = watchers
            .watch(viewer(), WatchRequest::default(), None)
            .expect("watch");
        assert_eq!(
            events.recv().await.expect("synced").expect("ok").kind,
            EventKind::Synced
        );
        stop.send_replace(true);
        let error = events.recv().await.expect("the end").expect_err("an error");
        assert!(
            matches!(error, Error::Domain(Domain::ShuttingDown)),
            "{error}"
        );
    }
}
