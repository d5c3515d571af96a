//! Job kinds as types: a handler of a kind gets its jobs' arguments
//! decoded; a payload that is not those arguments is a permanent failure
//! (dead at once, with the kind named, its follow-up not run on arguments
//! it could not read); a kind has one handler.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tre_jobs::{ClaimedJob, JobState};

use serde::Deserialize;
use tre_jobs::Timestamp;
use tre_jobs::{
    ExecOutcome, Executor, Handler, HandlerFuture, JobArgs, JobContext, JobError, JobPolicy,
    Metrics, Pool,
};
use tre_testkit::TestDb;

#[derive(Debug, Deserialize, PartialEq)]
struct Greet {
    name: String,
    times: u32,
}

impl JobArgs for Greet {
    const KIND: &'static str = "greet";
    const POLICY: JobPolicy = JobPolicy::new(Self::KIND, Pool::Notify, 3, 30, 1, 1);
}

#[derive(Default)]
struct Greeter {
    greeted: Mutex<Vec<(String, u32)>>,
    dead: Mutex<Vec<String>>,
}

impl Handler<Greet> for Greeter {
    fn run<'a>(
        &'a self,
        args: Greet,
        _job: &'a ClaimedJob,
        _ctx: &'a JobContext,
    ) -> HandlerFuture<'a, Result<(), JobError>> {
        self.greeted.lock().unwrap().push((args.name, args.times));
        Box::pin(async { Ok(()) })
    }

    fn on_dead<'a>(
        &'a self,
        args: Greet,
        _job: &'a ClaimedJob,
        _message: &'a str,
        _ctx: &'a JobContext,
    ) -> HandlerFuture<'a, ()> {
        self.dead.lock().unwrap().push(args.name);
        Box::pin(async {})
    }
}

fn executor(db: &TestDb) -> Executor {
    Executor::new(
        Arc::new(db.store.jobs()),
        format!("kinds-{}", tre_testkit::unique()),
        &[Greet::POLICY],
        Duration::from_secs(5),
        Arc::new(Metrics::default()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_gets_its_kinds_arguments_and_a_bad_payload_dies_at_once() {
    let db = TestDb::sqlite_with(tre_testkit::Schema::Jobs).await;
    let jobs = db.store.jobs();
    let greeter = Arc::new(Greeter::default());
    let mut executor = executor(&db);
    executor.handle::<Greet, _>(greeter.clone());
    assert!(executor.handles("greet"));
    assert_eq!(executor.pool_of("greet"), Some(Pool::Notify));

    let good = serde_json::json!({"kind": "greet", "name": "ada", "times": 2});
    jobs.enqueue_job("greet", "greet:good", &good, Timestamp(0))
        .await
        .unwrap();
    assert_eq!(
        executor.execute("greet:good", "greet").await,
        ExecOutcome::Succeeded
    );
    assert_eq!(*greeter.greeted.lock().unwrap(), [("ada".to_owned(), 2)]);

    // the attack: a payload that is not the kind's arguments
    let bad = serde_json::json!({"kind": "greet", "name": "bob", "times": "many"});
    jobs.enqueue_job("greet", "greet:bad", &bad, Timestamp(0))
        .await
        .unwrap();
    let ExecOutcome::Dead(message) = executor.execute("greet:bad", "greet").await else {
        panic!("a payload that is not the arguments is a permanent failure");
    };
    assert!(
        message.contains("greet job greet:bad is not its arguments"),
        "{message}"
    );
    let stored = jobs.job("greet:bad").await.unwrap().unwrap();
    assert_eq!((stored.state, stored.attempts), (JobState::Dead, 1));
    assert!(
        greeter.dead.lock().unwrap().is_empty(),
        "no follow-up on arguments that could not be read"
    );
    assert_eq!(greeter.greeted.lock().unwrap().len(), 1);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "job kind greet has two handlers")]
async fn a_kind_has_one_handler() {
    let db = TestDb::sqlite_with(tre_testkit::Schema::Jobs).await;
    let mut executor = executor(&db);
    executor.handle::<Greet, _>(Arc::new(Greeter::default()));
    executor.handle::<Greet, _>(Arc::new(Greeter::default()));
}
