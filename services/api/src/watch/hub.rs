//! WatchDeployments' source: one [`Hub`] per API process turns the index's changed keys
//! into numbered changes of what the API shows ([`DeploymentView`]), computed once for
//! every watcher; a key whose view did not change makes none. It keeps the latest view
//! of every Deployment (the state a new watcher starts from) and the last [`HISTORY`]
//! changes (what a resume token continues from), and fans changes out through a bounded
//! broadcast: a watcher that falls [`FANOUT_BUFFER`] changes behind is dropped, so no
//! reader makes the server buffer without bound. No watcher makes a request to the
//! cluster.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use setpoint_core::{DeploymentKey, Error as Domain};
use setpoint_k8s_index::Index;
use tokio::sync::broadcast;

use crate::Error;
use crate::replicas::query::Query;
use crate::replicas::view::DeploymentView;

/// Changes remembered for resume tokens.
pub const HISTORY: usize = 4096;
/// Changes a watcher may fall behind by before it is dropped.
pub const FANOUT_BUFFER: usize = 1024;

pub(crate) type Labels = Arc<BTreeMap<String, String>>;

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

/// What a change means to one watcher.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// It entered the watcher's set or changed in it.
    Changed,
    /// It left the set (deleted, or no longer matching).
    Left,
}

impl Change {
    /// Only what a watcher can see: a label change that neither brings the Deployment
    /// into its set nor takes it out is none.
    pub fn seen_by(&self, query: &Query) -> Option<Seen> {
        let sees = |labels: Option<&Labels>| {
            labels.is_some_and(|labels| query.sees(&self.view.key, labels))
        };
        match (
            sees(self.previous_labels.as_ref()),
            sees(self.labels.as_ref()),
        ) {
            (true, true) if !self.view_changed => None,
            (_, true) => Some(Seen::Changed),
            (true, false) => Some(Seen::Left),
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
pub struct Hub {
    /// Names this server process in resume tokens.
    epoch: u64,
    state: Arc<Mutex<State>>,
    fanout: broadcast::Sender<Arc<Change>>,
}

impl Default for Hub {
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

impl Hub {
    /// Keeps the hub current from the index until the index's change feed ends.
    pub async fn run(self, index: Index) {
        let mut keys = index.subscribe();
        index.wait_synced().await;
        self.update_all(&index);
        self.lock().synced = true;
        loop {
            match keys.recv().await {
                Ok(key) => self.update(&index, key),
                // Missed keys: compare everything.
                Err(broadcast::error::RecvError::Lagged(_)) => self.update_all(&index),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update_all(&self, index: &Index) {
        let Ok(deployments) = index.deployments() else {
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
        keys.into_iter().for_each(|key| self.update(index, key));
    }

    /// Publishes a change if what the API shows about `key` changed.
    fn update(&self, index: &Index, key: DeploymentKey) {
        let Ok(deployments) = index.deployments() else {
            return;
        };
        let row = deployments.get(&key);
        let now = row
            .as_ref()
            .map(|row| DeploymentView::of(key.clone(), row, index.setpoint(&key).as_deref()));
        self.publish(key, now, row.map(|row| row.labels.clone()));
    }

    /// Records and sends a change if `now` (with `labels`) differs from the latest view
    /// of `key`; `None`: it does not exist.
    pub(super) fn publish(
        &self,
        key: DeploymentKey,
        now: Option<DeploymentView>,
        labels: Option<Labels>,
    ) {
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
    pub fn start(&self, query: &Query, resume_token: &str) -> Result<Start, Error> {
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
                    .filter(|change| {
                        (change.labels.as_ref())
                            .is_some_and(|labels| query.sees(&change.view.key, labels))
                    })
                    .cloned()
                    .collect(),
                snapshot: true,
                seq: state.seq,
                live,
            });
        }
        let after = self.decode(resume_token, &query.fingerprint, state.seq)?;
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
                .filter(|change| change.seq > after && change.seen_by(query).is_some())
                .cloned()
                .collect(),
            snapshot: false,
            seq: state.seq,
            live,
        })
    }

    /// `<epoch>.<seq>.<fingerprint>`: this process, the change, the watch's query.
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

#[cfg(test)]
pub(crate) mod tests {
    use setpoint_core::Scope;

    use super::*;
    use crate::replicas::view::ReconcileState;

    pub(crate) fn key(name: &str) -> DeploymentKey {
        DeploymentKey::new("a", name).expect("valid key")
    }

    pub(crate) fn view_of(name: &str, replicas: i32) -> DeploymentView {
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

    pub(crate) fn labels(app: &str) -> Option<Labels> {
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

    pub(crate) fn synced() -> Hub {
        let changes = Hub::default();
        changes.lock().synced = true;
        changes
    }

    fn query(selector: &str) -> Query {
        Query {
            namespace: String::new(),
            selector: crate::replicas::selector::parse(selector).expect("selector"),
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
        let web = query("app=web");
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
                Some(Seen::Left),
                Some(Seen::Changed),
                None,
                Some(Seen::Left),
            ]
        );
    }

    #[test]
    fn the_current_state_is_what_matches_now() {
        let changes = synced();
        let web = query("app=web");
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
        let changes = Hub::default();
        let all = query("");
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
        let all = query("");
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
}
