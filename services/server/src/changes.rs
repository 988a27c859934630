//! WatchDeployments' source: one [`Changes`] hub per server turns the watch cache's
//! changed keys into numbered changes of what the API shows ([`DeploymentView`]),
//! computed once for every watcher; a key whose view did not change makes none. It keeps
//! the latest view of every Deployment (the state a new watcher starts from) and the
//! last [`HISTORY`] changes (what a resume token continues from), and fans changes out
//! through a bounded broadcast: a watcher that falls [`FANOUT_BUFFER`] changes behind is
//! dropped, so no reader makes the server buffer without bound. No watcher makes a
//! request to the cluster.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use kube::core::{Selector, SelectorExt};
use setpoint_core::key::validate_namespace;
use setpoint_core::{
    Caller, ClientIdentity, DeploymentKey, Error as Domain, Permission, Policy, Scope,
};
use tokio::sync::{broadcast, mpsc};
use tracing::Instrument;

use crate::Error;
use crate::cache::Cache;
use crate::reload::Shared;
use crate::view::{self, DeploymentView};

/// Changes remembered for resume tokens.
pub const HISTORY: usize = 4096;
/// Changes a watcher may fall behind by before it is dropped.
pub const FANOUT_BUFFER: usize = 1024;

type Labels = Arc<BTreeMap<String, String>>;

/// One change of what the API shows about a Deployment.
#[derive(Debug)]
pub struct Change {
    pub seq: u64,
    /// The Deployment's view (with its key); for a deleted one, as last seen.
    pub view: DeploymentView,
    /// Its labels now (shared with the index); `None` once it is deleted.
    pub labels: Option<Labels>,
    /// Its labels before this change; `None` if it did not exist.
    pub previous_labels: Option<Labels>,
    /// The view differs from the one before (not only the labels).
    pub view_changed: bool,
}

/// Which Deployments a watcher sees: the request's namespace and selector within the
/// caller's scope.
pub struct Filter {
    /// Empty for all namespaces.
    pub namespace: String,
    pub selector: Selector,
    pub scope: Scope,
    /// Of the namespace, selector and scope: a resume token is valid only for the same.
    pub fingerprint: String,
}

impl Filter {
    fn sees(&self, key: &DeploymentKey, labels: Option<&Labels>) -> bool {
        labels.is_some_and(|labels| {
            (self.namespace.is_empty() || self.namespace == key.namespace)
                && self.scope.allows(&key.namespace)
                && self.selector.matches(labels)
        })
    }
}

/// What a change means to one watcher.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// It entered the watcher's set or changed in it.
    Changed,
    /// It left the set (deleted, or no longer matching).
    Deleted,
}

impl Change {
    /// Only what a watcher can see: a label change that neither brings the Deployment
    /// into its set nor takes it out is none.
    pub fn seen_by(&self, filter: &Filter) -> Option<Seen> {
        let before = filter.sees(&self.view.key, self.previous_labels.as_ref());
        match (before, filter.sees(&self.view.key, self.labels.as_ref())) {
            (true, true) if !self.view_changed => None,
            (_, true) => Some(Seen::Changed),
            (true, false) => Some(Seen::Deleted),
            (false, false) => None,
        }
    }
}

/// A watcher's start: the changes to send first (the current state, or those after its
/// resume token), the sequence number they bring it to, and the live changes after it.
pub struct Start {
    pub replay: Vec<Arc<Change>>,
    /// Whether `replay` is the current state (else the changes after a resume token).
    pub snapshot: bool,
    pub seq: u64,
    pub live: broadcast::Receiver<Arc<Change>>,
}

#[derive(Default)]
struct State {
    synced: bool,
    seq: u64,
    /// The latest change of every existing Deployment.
    current: BTreeMap<DeploymentKey, Arc<Change>>,
    history: VecDeque<Arc<Change>>,
}

#[derive(Clone)]
pub struct Changes {
    /// Names this server process in resume tokens.
    epoch: u64,
    state: Arc<Mutex<State>>,
    fanout: broadcast::Sender<Arc<Change>>,
}

impl Default for Changes {
    fn default() -> Self {
        let mut random = [0u8; 8];
        // A failure leaves zeros; the clock still tells processes apart.
        let _ = getrandom::fill(&mut random);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        Self {
            epoch: u64::from_le_bytes(random) ^ nanos,
            state: Arc::default(),
            fanout: broadcast::channel(FANOUT_BUFFER).0,
        }
    }
}

impl Changes {
    /// Keeps the hub current from the cache until the cache's change feed ends.
    pub async fn run(self, cache: Cache) {
        let mut keys = cache.stores.subscribe();
        cache.stores.wait_synced().await;
        self.update_all(&cache);
        self.lock().synced = true;
        loop {
            match keys.recv().await {
                Ok(key) => self.update(&cache, key),
                // Missed keys: compare everything.
                Err(broadcast::error::RecvError::Lagged(_)) => self.update_all(&cache),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update_all(&self, cache: &Cache) {
        let Ok(deployments) = cache.deployments() else {
            return;
        };
        let mut keys: Vec<DeploymentKey> = deployments
            .scan(None, None, usize::MAX, |_| true)
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        keys.extend(self.lock().current.keys().cloned());
        keys.sort();
        keys.dedup();
        keys.into_iter().for_each(|key| self.update(cache, key));
    }

    /// Publishes a change if what the API shows about `key` changed.
    fn update(&self, cache: &Cache, key: DeploymentKey) {
        let Ok(deployments) = cache.deployments() else {
            return;
        };
        let row = deployments.get(&key);
        let now = row
            .as_ref()
            .map(|row| view::view(key.clone(), row, cache.setpoint(&key).as_deref()));
        self.publish(key, now, row.map(|row| row.labels.clone()));
    }

    /// Records and sends a change if `now` (with `labels`) differs from the latest view
    /// of `key`; `None`: it does not exist.
    fn publish(&self, key: DeploymentKey, now: Option<DeploymentView>, labels: Option<Labels>) {
        let mut state = self.lock();
        let before = state.current.get(&key);
        let view = match (now, before) {
            (Some(now), Some(before))
                if now == before.view && labels.as_ref() == before.labels.as_ref() =>
            {
                return;
            }
            (Some(now), _) => now,
            (None, Some(before)) => before.view.clone(),
            (None, None) => return,
        };
        let previous_labels = before.and_then(|before| before.labels.clone());
        let view_changed = before.is_none_or(|before| before.view != view);
        state.seq += 1;
        let change = Arc::new(Change {
            seq: state.seq,
            view,
            labels,
            previous_labels,
            view_changed,
        });
        if change.labels.is_some() {
            state.current.insert(key, change.clone());
        } else {
            state.current.remove(&key);
        }
        state.history.push_back(change.clone());
        if state.history.len() > HISTORY {
            state.history.pop_front();
        }
        // Sent under the lock, so a watcher's start and its live changes never overlap.
        let _ = self.fanout.send(change);
    }

    /// A watcher's start: from `resume_token`, or the current state.
    pub fn start(&self, filter: &Filter, resume_token: &str) -> Result<Start, Error> {
        let state = self.lock();
        if !state.synced {
            return Err(Domain::NotSynced.into());
        }
        let live = self.fanout.subscribe();
        if resume_token.is_empty() {
            return Ok(Start {
                replay: state
                    .current
                    .values()
                    .filter(|change| filter.sees(&change.view.key, change.labels.as_ref()))
                    .cloned()
                    .collect(),
                snapshot: true,
                seq: state.seq,
                live,
            });
        }
        let after = self.decode(resume_token, &filter.fingerprint, state.seq)?;
        // The history holds every change after `after` only if its oldest is at most the
        // next one.
        let oldest = state
            .history
            .front()
            .map_or(state.seq + 1, |change| change.seq);
        if oldest > after + 1 {
            return Err(Domain::ResumeTokenExpired.into());
        }
        Ok(Start {
            replay: state
                .history
                .iter()
                .filter(|change| change.seq > after && change.seen_by(filter).is_some())
                .cloned()
                .collect(),
            snapshot: false,
            seq: state.seq,
            live,
        })
    }

    /// `<epoch>.<seq>.<fingerprint>`: this process, the change, the watch's filter.
    pub fn token(&self, seq: u64, fingerprint: &str) -> String {
        format!("{:016x}.{seq}.{fingerprint}", self.epoch)
    }

    fn decode(&self, token: &str, fingerprint: &str, newest: u64) -> Result<u64, Error> {
        let mut parts = token.splitn(3, '.');
        let (epoch, seq) = (parts.next(), parts.next());
        let (Some(epoch), Some(seq), Some(of)) = (
            epoch.and_then(|epoch| u64::from_str_radix(epoch, 16).ok()),
            seq.and_then(|seq| seq.parse::<u64>().ok()),
            parts.next(),
        ) else {
            return Err(Domain::InvalidResumeToken.into());
        };
        if epoch != self.epoch {
            return Err(Domain::ResumeTokenExpired.into());
        }
        if seq > newest || of != fingerprint {
            return Err(Domain::InvalidResumeToken.into());
        }
        Ok(seq)
    }
}

/// Open watches per identity and per connection, with a slot that gives its place back
/// when dropped.
pub struct WatchLimits {
    pub per_identity: usize,
    pub per_connection: usize,
    open: Mutex<(HashMap<ClientIdentity, usize>, HashMap<SocketAddr, usize>)>,
}

pub struct Slot {
    limits: Arc<WatchLimits>,
    identity: ClientIdentity,
    connection: Option<SocketAddr>,
}

impl WatchLimits {
    pub fn new(per_identity: usize, per_connection: usize) -> Self {
        Self {
            per_identity,
            per_connection,
            open: Mutex::default(),
        }
    }

    pub fn acquire(
        self: &Arc<Self>,
        caller: &Caller,
        connection: Option<SocketAddr>,
    ) -> Result<Slot, Error> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let (identities, connections) = &mut *open;
        let full = |holder: String, limit| Err(Domain::TooManyWatches { holder, limit }.into());
        if let Some(connection) = connection
            && connections.get(&connection).copied().unwrap_or(0) >= self.per_connection
        {
            return full("this connection".into(), self.per_connection);
        }
        if identities.get(&caller.identity).copied().unwrap_or(0) >= self.per_identity {
            return full(format!("identity {}", caller.identity), self.per_identity);
        }
        if let Some(connection) = connection {
            *connections.entry(connection).or_default() += 1;
        }
        *identities.entry(caller.identity.clone()).or_default() += 1;
        Ok(Slot {
            limits: self.clone(),
            identity: caller.identity.clone(),
            connection,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .limits
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (identities, connections) = &mut *open;
        release(identities, &self.identity);
        if let Some(connection) = &self.connection {
            release(connections, connection);
        }
    }
}

/// One fewer under `key`; the entry goes at zero, so the maps hold only open watches.
fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

/// The method whose permission a watcher keeps needing.
const WATCH_METHOD: &str = "/setpoint.v1.ReplicaService/WatchDeployments";
/// Messages queued for one watcher's connection.
const WATCH_BUFFER: usize = 64;
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

/// One message of a watch.
#[derive(Debug)]
pub struct Event {
    pub kind: EventKind,
    /// `None` for [`EventKind::Synced`].
    pub view: Option<DeploymentView>,
    pub resume_token: String,
}

/// Everything watchers share.
#[derive(Clone)]
pub struct Watches {
    pub changes: Changes,
    pub limits: Arc<WatchLimits>,
    pub policy: Shared<Policy>,
    /// Becomes true when the server starts draining: watches end then.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// A watch ends after this long (`--max-connection-age`), so that its connection can
    /// close and clients rebalance and present fresh certificates; clients resume.
    pub max_age: std::time::Duration,
}

impl Watches {
    /// Validates and authorizes the request, takes a watch slot and starts a task that
    /// sends the watch's events, ending with an error or when the caller goes away.
    pub fn watch(
        &self,
        caller: Caller,
        request: WatchRequest,
        connection: Option<SocketAddr>,
    ) -> Result<mpsc::Receiver<Result<Event, Error>>, Error> {
        if !request.namespace.is_empty() {
            validate_namespace(&request.namespace)?;
            caller.check(&request.namespace)?;
        }
        let filter = Filter {
            selector: crate::selector::parse(&request.label_selector)?,
            fingerprint: view::query_fingerprint(
                &request.namespace,
                &request.label_selector,
                &caller.scope,
            ),
            namespace: request.namespace,
            scope: caller.scope.clone(),
        };
        let slot = self.limits.acquire(&caller, connection)?;
        let start = self.changes.start(&filter, &request.resume_token)?;
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        let watches = self.clone();
        tokio::spawn(
            async move {
                let _slot = slot;
                if let Err(error) = watches.forward(&caller, &filter, start, &sender).await {
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
        filter: &Filter,
        start: Start,
        sender: &mpsc::Sender<Result<Event, Error>>,
    ) -> Result<(), Error> {
        let Start {
            replay,
            snapshot,
            seq,
            mut live,
        } = start;
        let token = |seq| self.changes.token(seq, &filter.fingerprint);
        let event = |kind, change: &Change, resume_token| Event {
            kind,
            view: Some(change.view.clone()),
            resume_token,
        };
        let seen = |change: &Change| match change.seen_by(filter) {
            Some(Seen::Changed) => Some(event(EventKind::Changed, change, token(change.seq))),
            Some(Seen::Deleted) => Some(event(EventKind::Deleted, change, token(change.seq))),
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
                        Some(Event {
                            kind: EventKind::Synced,
                            view: None,
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
    use super::*;
    use crate::view::ReconcileState;

    fn key(name: &str) -> DeploymentKey {
        DeploymentKey::new("a", name).expect("valid key")
    }

    fn view_of(name: &str, replicas: i32) -> DeploymentView {
        DeploymentView {
            key: key(name),
            uid: format!("uid-{name}"),
            spec_replicas: replicas,
            ready_replicas: 0,
            available_replicas: 0,
            updated_replicas: 0,
            desired_replicas: None,
            state: ReconcileState::Unmanaged,
            message: String::new(),
            version: String::new(),
        }
    }

    fn labels(app: &str) -> Option<Labels> {
        Some(Arc::new(BTreeMap::from([(
            "app".to_string(),
            app.to_string(),
        )])))
    }

    /// `app=web` and an unrelated label.
    fn web_and_more() -> Option<Labels> {
        Some(Arc::new(BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            ("unrelated".to_string(), "label".to_string()),
        ])))
    }

    fn synced() -> Changes {
        let changes = Changes::default();
        changes.lock().synced = true;
        changes
    }

    fn filter(selector: &str) -> Filter {
        Filter {
            namespace: String::new(),
            selector: crate::selector::parse(selector).expect("selector"),
            scope: Scope::All,
            fingerprint: format!("f{selector}"),
        }
    }

    #[test]
    fn only_visible_changes_are_published() {
        let changes = synced();
        changes.publish(key("web"), Some(view_of("web", 1)), labels("web"));
        changes.publish(key("web"), Some(view_of("web", 1)), labels("web"));
        changes.publish(key("absent"), None, None);
        assert_eq!(
            changes.lock().seq,
            1,
            "the same view twice, or nothing, is no change"
        );
        changes.publish(key("web"), Some(view_of("web", 2)), labels("web"));
        changes.publish(key("web"), Some(view_of("web", 2)), labels("other"));
        changes.publish(key("web"), None, None);
        let state = changes.lock();
        assert_eq!(state.seq, 4);
        assert!(state.current.is_empty());
        let deleted = state.history.back().expect("the deletion");
        assert_eq!(
            deleted.view.spec_replicas, 2,
            "a deletion shows the last view"
        );
    }

    #[test]
    fn a_selector_sees_deployments_enter_and_leave() {
        let changes = synced();
        let web = filter("app=web");
        changes.publish(key("x"), Some(view_of("x", 1)), labels("api"));
        changes.publish(key("x"), Some(view_of("x", 1)), labels("web"));
        changes.publish(key("x"), Some(view_of("x", 2)), labels("web"));
        changes.publish(key("x"), Some(view_of("x", 2)), labels("api"));
        changes.publish(key("x"), Some(view_of("x", 2)), labels("web"));
        changes.publish(key("x"), Some(view_of("x", 2)), web_and_more());
        changes.publish(key("x"), None, None);
        let seen: Vec<Option<Seen>> = changes
            .lock()
            .history
            .iter()
            .map(|change| change.seen_by(&web))
            .collect();
        assert_eq!(
            seen,
            [
                None,
                Some(Seen::Changed),
                Some(Seen::Changed),
                Some(Seen::Deleted),
                Some(Seen::Changed),
                None,
                Some(Seen::Deleted),
            ]
        );
    }

    #[test]
    fn the_current_state_is_what_matches_now() {
        let changes = synced();
        let web = filter("app=web");
        changes.publish(key("kept"), Some(view_of("kept", 1)), labels("web"));
        // Its last change touched only a label: still in the state.
        changes.publish(key("kept"), Some(view_of("kept", 1)), web_and_more());
        // Its last change took it out of the selector: not in the state.
        changes.publish(key("left"), Some(view_of("left", 1)), labels("web"));
        changes.publish(key("left"), Some(view_of("left", 1)), labels("api"));
        let start = changes.start(&web, "").expect("start");
        let keys: Vec<String> = start
            .replay
            .iter()
            .map(|c| c.view.key.to_string())
            .collect();
        assert_eq!(keys, ["a/kept"]);
    }

    #[test]
    fn a_start_is_the_current_state_or_the_changes_after_a_token() {
        let changes = Changes::default();
        let all = filter("");
        assert!(
            changes.start(&all, "").is_err(),
            "not before the first sync"
        );
        changes.lock().synced = true;
        changes.publish(key("web"), Some(view_of("web", 1)), labels("web"));
        changes.publish(key("db"), Some(view_of("db", 1)), labels("db"));
        let start = changes.start(&all, "").expect("start");
        assert!(start.snapshot);
        let keys: Vec<String> = start
            .replay
            .iter()
            .map(|c| c.view.key.to_string())
            .collect();
        assert_eq!(keys, ["a/db", "a/web"], "in key order");
        let token = changes.token(start.seq, "f");

        changes.publish(key("web"), Some(view_of("web", 5)), labels("web"));
        let resumed = changes.start(&all, &token).expect("resume");
        assert!(!resumed.snapshot);
        assert_eq!(resumed.replay.len(), 1);
        assert_eq!(resumed.replay[0].view.spec_replicas, 5);

        for (bad, expected) in [
            ("garbage", Domain::InvalidResumeToken),
            (&changes.token(99, "f"), Domain::InvalidResumeToken),
            // Another watch's filter.
            (&changes.token(1, "fapp=web"), Domain::InvalidResumeToken),
            (
                &format!("{:016x}.1.f", changes.epoch ^ 1),
                Domain::ResumeTokenExpired,
            ),
        ] {
            match changes.start(&all, bad) {
                Err(Error::Domain(error)) => assert_eq!(error, expected, "{bad}"),
                other => panic!("{bad}: {:?}", other.map(|start| start.seq)),
            }
        }
    }

    #[test]
    fn a_token_older_than_the_history_has_expired() {
        let changes = synced();
        let all = filter("");
        let token = changes.token(0, "f");
        for replicas in 0..=HISTORY as i32 {
            changes.publish(key("web"), Some(view_of("web", replicas)), labels("web"));
        }
        assert!(matches!(
            changes.start(&all, &token),
            Err(Error::Domain(Domain::ResumeTokenExpired))
        ));
        // The oldest change kept is 2: a token at 1 still has everything after it.
        assert_eq!(
            changes.lock().history.front().map(|change| change.seq),
            Some(2)
        );
        assert_eq!(
            changes
                .start(&all, &changes.token(1, "f"))
                .expect("the boundary")
                .replay
                .len(),
            HISTORY
        );
        let recent = changes.token(2, "f");
        assert_eq!(
            changes
                .start(&all, &recent)
                .expect("in the history")
                .replay
                .len(),
            HISTORY - 1
        );
    }

    fn watches(changes: &Changes) -> (Watches, tokio::sync::watch::Sender<bool>) {
        let policy =
            Policy::parse("bindings: [{role: viewer, identities: [spiffe://x]}]").expect("policy");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let watches = Watches {
            changes: changes.clone(),
            limits: Arc::new(WatchLimits::new(10, 10)),
            policy: Shared::new(policy),
            stop: stopped,
            max_age: std::time::Duration::from_secs(3600),
        };
        (watches, stop)
    }

    fn viewer() -> Caller {
        Caller {
            identity: ClientIdentity("spiffe://x".into()),
            scope: Scope::All,
        }
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_dropped_with_its_place_to_resume() {
        let changes = synced();
        changes.publish(key("web"), Some(view_of("web", 0)), labels("web"));
        let (watches, _stop) = watches(&changes);
        let mut events = watches
            .watch(viewer(), WatchRequest::default(), None)
            .expect("watch");
        // The watcher reads nothing while more changes come than its queue and the
        // fan-out buffer hold.
        for replicas in 1..=(WATCH_BUFFER + FANOUT_BUFFER + 10) as i32 {
            changes.publish(key("web"), Some(view_of("web", replicas)), labels("web"));
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
            watches.limits.open.lock().expect("lock").0.is_empty(),
            "its slot is free"
        );
    }

    #[tokio::test]
    async fn watches_end_when_the_server_stops() {
        let changes = synced();
        let (watches, stop) = watches(&changes);
        let mut events = watches
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

    #[test]
    fn watch_slots_are_limited_per_identity_and_connection_and_given_back() {
        let limits = Arc::new(WatchLimits::new(2, 1));
        let caller = Caller {
            identity: ClientIdentity("spiffe://x".into()),
            scope: Scope::All,
        };
        let (one, two): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().expect("addr"),
            "127.0.0.1:2".parse().expect("addr"),
        );
        let first = limits.acquire(&caller, Some(one)).expect("first");
        assert!(
            limits.acquire(&caller, Some(one)).is_err(),
            "connection full"
        );
        let second = limits
            .acquire(&caller, Some(two))
            .expect("second connection");
        let refused = limits.acquire(&caller, None).err().map(|e| e.to_string());
        assert!(refused.is_some_and(|message| message.contains("identity spiffe://x")));
        drop(first);
        drop(second);
        assert!(
            limits.open.lock().expect("lock").0.is_empty(),
            "all given back"
        );
        limits.acquire(&caller, Some(one)).expect("free again");
    }
}
