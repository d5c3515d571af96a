//! The durable job runtime.
//!
//! **SQL is the source of truth; the queue only dispatches.** Commands write
//! jobs to the outbox in the same transaction as the state change. The
//! [`Relay`] hands due jobs to a [`JobQueue`] (Redis through apalis, or the
//! embedded in-process queue). A worker that receives a job key *claims* it
//! in SQL (a lease), runs the handler under a timeout, and records the
//! outcome in SQL: done, retry later with exponential backoff and jitter, or
//! dead with the last error. A redelivered key finds the job done or leased
//! and is a no-op; handlers keep their own effects idempotent.
//!
//! The [`Reconciler`] hands back to the relay whatever the queue lost (a Redis
//! restart or `FLUSHALL`: queued but never claimed) and whatever a dead
//! worker held (lease expired), so losing Redis or a worker loses no work.
//!
//! Retry layers, on purpose only two: `backon` inside a handler around one
//! S3/DB call, and this runtime's per-job policy for whole jobs. apalis's own
//! retries are not used (its storage-level retries ignore `max_attempts`).

mod batch;
mod error;
mod executor;
mod job_store;
mod kind;
mod load;
mod metrics;
mod pauses;
mod policy;
mod queue;
mod record;
mod redis_queue;
mod retention;
mod runtime;
mod state;

pub use error::{JobError, JobStoreError, QueueError};
pub use executor::{ExecOutcome, Executor, JobContext, JobHandler};
pub use job_store::JobStore;
pub use kind::{Handler, HandlerFuture, JobArgs};
pub use load::{FleetLoad, PoolLoad, UnrunnableKind};
pub use metrics::Metrics;
pub use pauses::Pauses;
pub use policy::{JobPolicy, Pool};
pub use queue::{EmbeddedQueue, JobMessage, JobQueue, Shutdown};
pub use record::{ClaimedJob, DueJob, FailOutcome, JobCounts, OutboxJob};
pub use redis_queue::{RedisQueue, RedisQueueOptions, worker_name};
pub use retention::{FinishedJobs, Retained};
pub use runtime::{Cleaner, Reconciler, Relay, RuntimeOptions, spawn_maintenance};
pub use state::{JobEvent, JobState};
pub use tre_time::{Timestamp, now};
