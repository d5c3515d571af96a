//! The showcase's columns and aggregates of recently asked inventory
//! versions, in this process's memory: the individual-level values the
//! cohort builder counts in, loaded once per version, never returned.

use std::sync::{Arc, Mutex};

use tre_dispense::Sources;
use tre_dispense::showcase::ShowcaseColumns;
use tre_domain::showcase::ShowcaseAggregates;
use tre_domain::{Environment, EnvironmentId};
use tre_store::Store;

use super::{AskError, Result, source_unavailable};

/// Inventory versions whose columns stay loaded (the newest used).
const CACHED_VERSIONS: usize = 8;

/// An environment's inventory version.
type VersionKey = (EnvironmentId, u32);

/// What is kept per inventory version, the newest used last; the least
/// recently used goes once [`CACHED_VERSIONS`] are kept.
struct Recent<T> {
    entries: Mutex<Vec<(VersionKey, Arc<T>)>>,
}

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }
}

impl<T> Recent<T> {
    fn get(&self, key: &VersionKey) -> Option<Arc<T>> {
        let mut entries = self.entries.lock().expect("not poisoned");
        let at = entries.iter().position(|(k, _)| k == key)?;
        let entry = entries.remove(at);
        let value = entry.1.clone();
        entries.push(entry);
        Some(value)
    }

    fn put(&self, key: VersionKey, value: Arc<T>) {
        let mut entries = self.entries.lock().expect("not poisoned");
        if entries.len() >= CACHED_VERSIONS {
            entries.remove(0);
        }
        entries.push((key, value));
    }
}

/// The showcase columns (and aggregates) of recently asked inventory
/// versions.
pub struct ShowcaseCache {
    sources: Sources,
    /// A version's aggregates, once computed (they never change after).
    aggregates: Recent<ShowcaseAggregates>,
    columns: Recent<ShowcaseColumns>,
    /// One load at a time: a burst of first queries loads a version once.
    loading: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ShowcaseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShowcaseCache").finish_non_exhaustive()
    }
}

impl ShowcaseCache {
    /// Environments' sources opened by `sources`.
    pub fn new(sources: Sources) -> Self {
        Self {
            sources,
            aggregates: Recent::default(),
            columns: Recent::default(),
            loading: tokio::sync::Mutex::default(),
        }
    }

    /// The environments' sources.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// The aggregates of version `version` of `env`, once computed.
    pub(crate) async fn aggregates(
        &self,
        store: &Store,
        env: &EnvironmentId,
        version: u32,
    ) -> Result<Option<Arc<ShowcaseAggregates>>> {
        let key = (env.clone(), version);
        if let Some(found) = self.aggregates.get(&key) {
            return Ok(Some(found));
        }
        let Some(full) = store.showcase_aggregates(env, version).await? else {
            return Ok(None);
        };
        if full.version != version {
            return Ok(None); // an earlier version's: this one is being computed
        }
        let full = Arc::new(full);
        self.aggregates.put(key, full.clone());
        Ok(Some(full))
    }

    /// The columns of `env`'s current inventory version, loaded now or
    /// before.
    pub(crate) async fn columns(
        &self,
        store: &Store,
        env: &Environment,
    ) -> Result<Arc<ShowcaseColumns>> {
        let inventory = env.inventory.as_ref().ok_or(AskError::NoShowcase)?;
        let key = (env.id.clone(), inventory.version);
        if let Some(columns) = self.columns.get(&key) {
            return Ok(columns);
        }
        let _one = self.loading.lock().await;
        if let Some(columns) = self.columns.get(&key) {
            return Ok(columns);
        }
        let root = env.source.as_ref().ok_or(AskError::NoShowcase)?;
        let secret = store.showcase_secret(&env.id).await?;
        let source = self.sources.get(root).map_err(source_unavailable)?;
        let columns = Arc::new(
            ShowcaseColumns::load(&source, inventory, &secret)
                .await
                .map_err(source_unavailable)?,
        );
        self.columns.put(key, columns.clone());
        Ok(columns)
    }
}
