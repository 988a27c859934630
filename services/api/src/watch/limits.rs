//! How many WatchDeployments streams one identity and one connection may hold open: a
//! [`Slot`] per watch, which gives its place back when dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use setpoint_core::{Caller, ClientIdentity, Error as Domain};

use crate::Error;

/// Open watches per identity and per connection, with a slot that gives its place back
/// when dropped.
pub struct WatchLimits {
    pub per_identity: usize,
    pub per_connection: usize,
    pub(super) open: Mutex<(HashMap<ClientIdentity, usize>, HashMap<SocketAddr, usize>)>,
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

#[cfg(test)]
mod tests {
    use setpoint_core::Scope;

    use super::*;

    #[test]
    fn watch_slots_are_limited_per_identity_and_connection_and_given_back() {
        let limits = Arc::new(WatchLimits::new(2, 1));
        let caller = Caller {
            identity: ClientIdentity::Uri("spiffe://x".into()),
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
