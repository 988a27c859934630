//! WatchDeployments' source: one [`Hub`] per API process turns the index's changed keys
//! into numbered changes of what the API shows ([`DeploymentView`]), computed once for
//! every watcher; a key whose view did not change makes none. It keeps the latest view
//! of every Deployment (the state a new watcher starts from) and the last [`HISTORY`]
//! changes (what a resume token continues from), and fans changes out through a bounded
//! broadcast: a watcher that falls [`FANOUT_BUFFER`] changes behind is dropped, so no
//! reader makes the server buffer without bound. No watcher makes a request to the
//! cluster.

use std::borrow::Borrow;
use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use setpoint_core::{DeploymentKey, Error as Domain};
use setpoint_k8s_api::ReplicaSetpoint;
use setpoint_k8s_index::{DeploymentRow, Index, Labels};
use tokio::sync::broadcast;

use crate::Error;
use crate::replicas::query::Query;
use crate::replicas::view::DeploymentView;

/// Changes remembered for resume tokens.
pub const HISTORY: usize = 4096;
/// Changes a watcher may fall behind by before it is dropped.
pub const FANOUT_BUFFER: usize = 1024;

/// What the API shows about a Deployment is made of: its row and its setpoint, both
/// shared with the index, so the hub's state costs a few pointers per Deployment.
#[derive(Clone, Debug)]
pub struct Source {
    pub row: Arc<DeploymentRow>,
    pub setpoint: Option<Arc<ReplicaSetpoint>>,
}

impl Source {
    fn view(&self) -> DeploymentView {
        DeploymentView::of(&self.row, self.setpoint.as_deref())
    }
}

/// One change of what the API shows about a Deployment.
#[derive(Debug)]
pub struct Change {
    pub seq: u64,
    /// The Deployment now; for a deleted one, as last seen.
    pub source: Source,
    pub deleted: bool,
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
    pub fn key(&self) -> &DeploymentKey {
        &self.source.row.key
    }

    /// What the API shows, built when a watcher sends it.
    pub fn view(&self) -> DeploymentView {
        self.source.view()
    }

    /// Its labels now; `None` once it is deleted.
    fn labels(&self) -> Option<&Labels> {
        (!self.deleted).then_some(&self.source.row.labels)
    }

    /// Only what a watcher can see: a label change that neither brings the Deployment
    /// into its set nor takes it out is none.
    pub fn seen_by(&self, query: &Query) -> Option<Seen> {
        let sees =
            |labels: Option<&Labels>| labels.is_some_and(|labels| query.sees(self.key(), labels));
        match (sees(self.previous_labels.as_ref()), sees(self.labels())) {
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

/// The latest change of a Deployment, found by its key (which its row holds).
#[derive(Clone)]
struct Latest(Arc<Change>);

impl Borrow<DeploymentKey> for Latest {
    fn borrow(&self) -> &DeploymentKey {
        self.0.key()
    }
}

impl PartialEq for Latest {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}

impl Eq for Latest {}

impl PartialOrd for Latest {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Latest {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.key().cmp(other.0.key())
    }
}

/// The latest changes of `namespace` (of every namespace when empty), in key order.
fn current_in<'a>(
    current: &'a BTreeSet<Latest>,
    namespace: &'a str,
) -> impl Iterator<Item = &'a Latest> {
    let from = DeploymentKey {
        namespace: namespace.into(),
        name: String::new(),
    };
    current
        .range::<DeploymentKey, _>(from..)
        .take_while(move |latest| namespace.is_empty() || latest.0.key().namespace == namespace)
}

#[derive(Default)]
struct State {
    synced: bool,
    seq: u64,
    /// The latest change of every existing Deployment.
    current: BTreeSet<Latest>,
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
            .scan(None, None, usize::MAX, &[], |_| true)
            .into_iter()
            .map(|row| row.key.clone())
            .collect();
        keys.extend(
            self.lock()
                .current
                .iter()
                .map(|latest| latest.0.key().clone()),
        );
        keys.sort();
        keys.dedup();
        keys.into_iter().for_each(|key| self.update(index, key));
    }

    /// Publishes a change if what the API shows about `key` changed.
    fn update(&self, index: &Index, key: DeploymentKey) {
        let Ok(deployments) = index.deployments() else {
            return;
        };
        let now = deployments.get(&key).map(|row| Source {
            row,
            setpoint: index.setpoint(&key),
        });
        self.publish(&key, now);
    }

    /// Records and sends a change if `now` (`None`: it does not exist) shows something
    /// other than the latest change of `key`.
    pub(super) fn publish(&self, key: &DeploymentKey, now: Option<Source>) {
        let mut state = self.lock();
        let before = state.current.get(key).map(|latest| latest.0.clone());
        let (source, deleted, view_changed) = match (now, &before) {
            (Some(now), Some(before)) => {
                let view_changed = now.view() != before.view();
                if !view_changed && now.row.labels == before.source.row.labels {
                    return;
                }
                (now, false, view_changed)
            }
            (Some(now), None) => (now, false, true),
            (None, Some(before)) => (before.source.clone(), true, false),
            (None, None) => return,
        };
        state.seq += 1;
        let change = Arc::new(Change {
            seq: state.seq,
            source,
            deleted,
            previous_labels: before.map(|before| before.source.row.labels.clone()),
            view_changed,
        });
        if deleted {
            state.current.remove(key);
        } else {
            state.current.replace(Latest(change.clone()));
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
                replay: current_in(&state.current, &query.namespace)
                    .filter(|latest| query.sees(latest.0.key(), &latest.0.source.row.labels))
                    .map(|latest| latest.0.clone())
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

    pub(crate) fn key(name: &str) -> DeploymentKey {
        DeploymentKey::new("a", name).expect("valid key")
    }

    /// Deployment `a/<name>` with `replicas` and `labels`, without a setpoint.
    pub(crate) fn deployment(name: &str, replicas: i32, labels: &[(&str, &str)]) -> Option<Source> {
        let row = DeploymentRow {
            key: key(name),
            uid: format!("uid-{name}").into(),
            resource_version: "1".into(),
            labels: labels.iter().copied().collect(),
            spec_replicas: replicas,
            ready_replicas: 0,
            available_replicas: 0,
            updated_replicas: 0,
        };
        Some(Source {
            row: Arc::new(row),
            setpoint: None,
        })
    }

    /// Labelled `app=<app>`.
    pub(crate) fn app(name: &str, replicas: i32, app: &str) -> Option<Source> {
        deployment(name, replicas, &[("app", app)])
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
        changes.publish(&key("web"), app("web", 1, "web"));
        changes.publish(&key("web"), app("web", 1, "web"));
        changes.publish(&key("absent"), None);
        assert_eq!(
            changes.lock().seq,
            1,
            "the same view twice, or nothing, is no change"
        );
        changes.publish(&key("web"), app("web", 2, "web"));
        changes.publish(&key("web"), app("web", 2, "other"));
        changes.publish(&key("web"), None);
        let state = changes.lock();
        assert_eq!(state.seq, 4);
        assert!(state.current.is_empty());
        let deleted = state.history.back().expect("the deletion");
        assert_eq!(
            deleted.source.row.spec_replicas, 2,
            "a deletion shows the last view"
        );
    }

    #[test]
    fn a_selector_sees_deployments_enter_and_leave() {
        let changes = synced();
        let web = query("app=web");
        changes.publish(&key("x"), app("x", 1, "api"));
        changes.publish(&key("x"), app("x", 1, "web"));
        changes.publish(&key("x"), app("x", 2, "web"));
        changes.publish(&key("x"), app("x", 2, "api"));
        changes.publish(&key("x"), app("x", 2, "web"));
        changes.publish(
            &key("x"),
            deployment("x", 2, &[("app", "web"), ("unrelated", "label")]),
        );
        changes.publish(&key("x"), None);
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
        changes.publish(&key("kept"), app("kept", 1, "web"));
        // Its last change touched only a label: still in the state.
        changes.publish(
            &key("kept"),
            deployment("kept", 1, &[("app", "web"), ("unrelated", "label")]),
        );
        // Its last change took it out of the selector: not in the state.
        changes.publish(&key("left"), app("left", 1, "web"));
        changes.publish(&key("left"), app("left", 1, "api"));
        let start = changes.start(&web, "").expect("start");
        let keys: Vec<String> = start.replay.iter().map(|c| c.key().to_string()).collect();
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
        changes.publish(&key("web"), app("web", 1, "web"));
        changes.publish(&key("db"), app("db", 1, "db"));
        let start = changes.start(&all, "").expect("start");
        assert!(start.snapshot);
        let keys: Vec<String> = start.replay.iter().map(|c| c.key().to_string()).collect();
        assert_eq!(keys, ["a/db", "a/web"], "in key order");
        let token = changes.token(start.seq, "f");

        changes.publish(&key("web"), app("web", 5, "web"));
        let resumed = changes.start(&all, &token).expect("resume");
        assert!(!resumed.snapshot);
        assert_eq!(resumed.replay.len(), 1);
        assert_eq!(resumed.replay[0].source.row.spec_replicas, 5);

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
            changes.publish(&key("web"), app("web", replicas, "web"));
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
