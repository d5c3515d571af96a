//! Pools an operator paused for the whole fleet (stored in SQL): the relay
//! does not dispatch their jobs and workers do not claim them; jobs already
//! running finish. Every process rereads the set at most a second after it
//! last did, so a pause reaches the fleet within about a second.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::{JobStore, Pool};

/// How long this process trusts the paused set it read.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// The paused pools and when they were read.
type Read = Option<(Instant, BTreeSet<String>)>;

/// The paused pools, as this process last read them.
#[derive(Clone)]
pub struct Pauses {
    store: Arc<dyn JobStore>,
    read: Arc<Mutex<Read>>,
}

impl std::fmt::Debug for Pauses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pauses").finish_non_exhaustive()
    }
}

impl Pauses {
    pub fn new(store: Arc<dyn JobStore>) -> Self {
        Self {
            store,
            read: Arc::default(),
        }
    }

    /// Whether `pool` is paused. A database that cannot be asked pauses
    /// nothing (the claim that follows fails on its own).
    pub async fn is_paused(&self, pool: Pool) -> bool {
        if let Some((at, paused)) = &*self.read.lock().expect("not poisoned")
            && at.elapsed() < FRESH_FOR
        {
            return paused.contains(pool.as_str());
        }
        match self.store.paused_pools().await {
            Ok(paused) => {
                let answer = paused.contains(pool.as_str());
                *self.read.lock().expect("not poisoned") = Some((Instant::now(), paused));
                answer
            }
            Err(e) => {
                warn!(error = %e, "cannot read paused pools");
                false
            }
        }
    }
}
