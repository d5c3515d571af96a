//! Job kinds as types (as River's `JobArgs` and `Worker<T>`): a kind is
//! declared once, as the type of the arguments its jobs carry, with its
//! name and its policy; a [`Handler`] of that type runs its jobs, getting
//! the arguments already decoded. [`Executor::handle`] registers one, so
//! the registry of kinds, their policies and their handlers is made of
//! types, not of strings repeated in several places.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::ClaimedJob;
use serde::de::DeserializeOwned;

use crate::{Executor, JobContext, JobError, JobHandler, JobPolicy, Pool};

/// The arguments of one kind of job, decoded from its stored payload
/// (fields the type does not name, such as the payload's `kind`, are
/// ignored).
pub trait JobArgs: DeserializeOwned + Send + 'static {
    /// The kind's name, as its jobs are stored and dispatched.
    const KIND: &'static str;
    /// Its pool and limits (its `kind` is [`JobArgs::KIND`]).
    const POLICY: JobPolicy;
}

impl JobPolicy {
    /// A kind's policy: its pool, attempts before it is dead-lettered, one
    /// attempt's time limit (seconds), and its backoff from `base_ms` up to
    /// `max_s`.
    pub const fn new(
        kind: &'static str,
        pool: Pool,
        max_attempts: i64,
        timeout_s: u64,
        base_ms: u64,
        max_s: u64,
    ) -> Self {
        Self {
            kind,
            pool,
            max_attempts,
            timeout: Duration::from_secs(timeout_s),
            backoff_base: Duration::from_millis(base_ms),
            backoff_max: Duration::from_secs(max_s),
        }
    }
}

/// What a handler's future is.
pub type HandlerFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs the jobs of kind `A`. Must be idempotent: a job may run again
/// after a crash between its effect and its completion.
pub trait Handler<A: JobArgs>: Send + Sync + 'static {
    fn run<'a>(
        &'a self,
        args: A,
        job: &'a ClaimedJob,
        ctx: &'a JobContext,
    ) -> HandlerFuture<'a, Result<(), JobError>>;

    /// Called once a job of the kind is dead-lettered (after the dead
    /// letter is recorded), e.g. to mark what it was working on failed.
    fn on_dead<'a>(
        &'a self,
        _args: A,
        _job: &'a ClaimedJob,
        _message: &'a str,
        _ctx: &'a JobContext,
    ) -> HandlerFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// A typed handler as the executor runs it: it decodes the payload.
struct Typed<A, H> {
    handler: Arc<H>,
    args: PhantomData<fn() -> A>,
}

/// The arguments of `job`, or why its payload is not them (permanent: a
/// retry reads the same payload).
fn decode<A: JobArgs>(job: &ClaimedJob) -> Result<A, JobError> {
    A::deserialize(&job.payload).map_err(|e| {
        JobError::Permanent(format!(
            "the payload of {} job {} is not its arguments: {e}",
            A::KIND,
            job.key
        ))
    })
}

impl<A: JobArgs, H: Handler<A>> JobHandler for Typed<A, H> {
    fn kinds(&self) -> Vec<&'static str> {
        vec![A::KIND]
    }

    fn handle<'a>(
        &'a self,
        job: &'a ClaimedJob,
        ctx: &'a JobContext,
    ) -> HandlerFuture<'a, Result<(), JobError>> {
        Box::pin(async move { self.handler.run(decode::<A>(job)?, job, ctx).await })
    }

    fn on_dead<'a>(
        &'a self,
        job: &'a ClaimedJob,
        message: &'a str,
        ctx: &'a JobContext,
    ) -> HandlerFuture<'a, ()> {
        Box::pin(async move {
            if let Ok(args) = decode::<A>(job) {
                self.handler.on_dead(args, job, message, ctx).await;
            }
        })
    }
}

impl Executor {
    /// Registers `handler` for the jobs of kind `A` (which must have a
    /// policy, and no other handler).
    pub fn handle<A: JobArgs, H: Handler<A>>(&mut self, handler: Arc<H>) {
        self.register(Arc::new(Typed::<A, H> {
            handler,
            args: PhantomData,
        }));
    }
}
