//! Test support: each test owns its world. A fresh database (SQLite file or
//! PostgreSQL database), a private `redis-server` on its own port, a real
//! local HTTP receiver for webhooks, and a published environment with the
//! usual cast.

mod slow_writes;
pub use slow_writes::SlowWrites;

use std::collections::BTreeSet;
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::ObjectStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tre_domain::{
    AccessRequest, Actor, CohortCount, DataCollection, Dataset, DecisionRule, EnvironmentCommand,
    EnvironmentId, Field, FieldRef, FieldType, Inventory, NewEnvironment, Principal, RequestId,
    RequestState, ReviewPipeline, ReviewStage, StoreRoot,
};
use tre_store::{Caller, NewUser, Store};

/// Runs each listed test on SQLite and on PostgreSQL, each on a database of
/// its own (the PostgreSQL half is skipped, with a message, only when no
/// server answers and `CI` is not set). Each test is an `async fn` taking
/// `&Store`, or, after `with_db:`, the [`TestDb`] itself (to open a second
/// store on its url, as another process would).
#[macro_export]
macro_rules! on_both_backends {
    (with_db: $($name:ident),* $(,)?) => {
        mod sqlite_by_url {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::TestDb::sqlite().await;
                    super::$name(&db).await;
                    db.finish().await;
                }
            )*
        }
        mod postgres_by_url {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::TestDb::postgres().await else { return };
                    super::$name(&db).await;
                    db.finish().await;
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::TestDb::sqlite().await;
                    super::$name(&db.store).await;
                    db.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::TestDb::postgres().await else { return };
                    super::$name(&db.store).await;
                    db.finish().await;
                }
            )*
        }
    };
}

pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A database of the test's own.
pub struct TestDb {
    pub store: Store,
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(std::path::PathBuf),
    Postgres { admin_url: String, name: String },
}

/// The admin connection for creating test databases.
pub fn postgres_admin_url() -> String {
    std::env::var("TRE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

impl TestDb {
    pub async fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!("tre-test-{}", unique()));
        let url = format!("sqlite://{}/tre.db", dir.display());
        let store = Store::open(&url).await.expect("open sqlite");
        Self {
            store,
            url,
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    /// A fresh PostgreSQL database; `None` (with a message) when no server
    /// answers and `CI` is not set.
    pub async fn postgres() -> Option<Self> {
        use sqlx::Connection;
        let admin_url = postgres_admin_url();
        let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(conn) => conn,
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!(
                    "SKIPPED: PostgreSQL test: no server at {admin_url} ({e}); set CI=1 to make this a failure"
                );
                return None;
            }
            Err(e) => panic!("PostgreSQL is required when CI is set: {admin_url}: {e}"),
        };
        let name = format!("tre_test_{}", unique());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create database");
        let (base, _) = admin_url.rsplit_once('/').expect("a database url");
        let url = format!("{base}/{name}");
        let store = Store::open(&url).await.expect("open postgres");
        Some(Self {
            store,
            url,
            cleanup: Cleanup::Postgres { admin_url, name },
        })
    }

    pub async fn finish(self) {
        self.store.close().await;
        match self.cleanup {
            Cleanup::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin_url, name } => {
                use sqlx::Connection;
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                }
            }
        }
    }
}

/// A PostgreSQL cluster of the test's own (`initdb` into a temporary
/// folder, served on a free port, no fsync), for tests that stop or restart
/// the database under running workers. Run as `postgres` when the test runs
/// as root. Stopped and removed on drop.
pub struct PrivatePostgres {
    pub port: u16,
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
}

impl PrivatePostgres {
    /// Initialises and starts one, or returns `None` (with a message) when
    /// PostgreSQL's server programs are not installed and `CI` is not set.
    pub fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .flatten()
                    .map(|v| v.path().join("bin"))
                    .filter(|b| b.join("initdb").exists())
                    .max()
            });
        let Some(bin) = bin else {
            if std::env::var_os("CI").is_some() {
                panic!("PostgreSQL's server programs are required when CI is set");
            }
            eprintln!("SKIPPED: private PostgreSQL cluster: initdb not found");
            return None;
        };
        let cluster = Self {
            port: free_port(),
            dir: std::env::temp_dir().join(format!("tre-pg-{}", unique())),
            bin,
        };
        cluster.run(&format!(
            "{} -D {} -U postgres --auth=trust -N -E UTF8 --locale=C.UTF-8",
            cluster.bin.join("initdb").display(),
            cluster.dir.display()
        ));
        cluster.pg_ctl("start");
        Some(cluster)
    }

    /// Runs a shell command line, as `postgres` when we are root.
    fn run(&self, line: &str) {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let output = if root {
            Command::new("su").args(["postgres", "-c", line]).output()
        } else {
            Command::new("sh").args(["-c", line]).output()
        }
        .expect("run a PostgreSQL program");
        assert!(
            output.status.success(),
            "{line}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn pg_ctl(&self, action: &str) {
        self.run(&format!(
            "{} -D {dir} -w -t 60 -m fast -l {dir}/server.log -o '-c listen_addresses=127.0.0.1 -p {port} -k {dir} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200' {action}",
            self.bin.join("pg_ctl").display(),
            dir = self.dir.display(),
            port = self.port,
        ));
    }

    /// A database url of the cluster (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A fast restart (`pg_ctl restart -m fast`): every connection is
    /// terminated, as in a routine restart under running workers.
    pub fn restart(&self) {
        self.pg_ctl("restart");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Command::new("su")
            .args([
                "postgres",
                "-c",
                &format!(
                    "{} -D {} -m immediate stop",
                    self.bin.join("pg_ctl").display(),
                    self.dir.display()
                ),
            ])
            .output();
        let _ = Command::new(self.bin.join("pg_ctl"))
            .args([
                "-D",
                self.dir.to_str().unwrap_or("."),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A `redis-server` of the test's own (no persistence), stopped on drop.
pub struct TestRedis {
    pub port: u16,
    child: Option<Child>,
}

impl TestRedis {
    /// Starts one, or returns `None` (with a message) when `redis-server` is
    /// not installed and `CI` is not set.
    pub fn start() -> Option<Self> {
        let port = free_port();
        let mut redis = Self { port, child: None };
        match redis.spawn() {
            Ok(()) => Some(redis),
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("SKIPPED: Redis test: cannot start redis-server ({e})");
                None
            }
            Err(e) => panic!("redis-server is required when CI is set: {e}"),
        }
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(std::io::Error::other("redis-server did not start"))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (losing everything, as without persistence).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills and starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn().expect("restart redis-server");
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One request a [`WebhookReceiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A real HTTP/1.1 server on the loopback interface that records each
/// request and answers with the next scripted status (then 200), optionally
/// after a delay.
pub struct WebhookReceiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Requests whose body has arrived (before any delay and answer).
    pub arrived: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    pub async fn start(statuses: Vec<u16>, delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let arrived: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let arrivals = arrived.clone();
        let log = received.clone();
        let statuses = Arc::new(Mutex::new(statuses.into_iter()));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    break;
                };
                let log = log.clone();
                let statuses = statuses.clone();
                let arrivals = arrivals.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head_end, length) = loop {
                        let Ok(n) = socket.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).to_string();
                            let length = head
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            break (i + 4, length);
                        }
                    };
                    while buf.len() < head_end + length {
                        let Ok(n) = socket.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let headers = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| {
                            l.split_once(':')
                                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                        })
                        .collect();
                    let status = statuses.lock().expect("lock").next().unwrap_or(200);
                    arrivals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    log.lock().expect("lock").push(Received {
                        headers,
                        body: buf[head_end..head_end + length].to_vec(),
                    });
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        Self {
            url,
            received,
            arrived,
            task,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn caller(id: &str) -> Caller {
    Caller::new(Actor::user(id), format!("test-{id}"))
}

/// Creates a user (or returns the existing one) as a caller.
pub async fn user(store: &Store, id: &str, platform_admin: bool, groups: &[&str]) -> Caller {
    if let Some(user) = store.user(id).await.expect("user") {
        return Caller::new(user.actor(), format!("test-{id}"));
    }
    let (user, _) = store
        .bootstrap_user(
            NewUser {
                email: None,
                id: id.into(),
                platform_admin,
                groups: groups.iter().map(|g| g.to_string()).collect(),
            },
            "test",
        )
        .await
        .expect("bootstrap user");
    Caller::new(user.actor(), format!("test-{id}"))
}

fn field(name: &str, field_type: FieldType) -> Field {
    Field {
        name: name.into(),
        field_type,
        description: String::new(),
    }
}

/// The folder of [`inventory`]'s two small Parquet files, written once (and
/// shared by every test process, written to a temporary name first): 1,000
/// participants (`participant_id` 1..=1000, `sex` F/M alternating, `age`
/// 30..=79 in turn) and one diagnosis each (`icd10`).
pub fn small_data() -> std::path::PathBuf {
    static DONE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let dir = std::env::temp_dir().join("tre-testkit-small-v1");
        if dir.join("diagnoses.parquet").exists() {
            return dir;
        }
        let tmp = std::env::temp_dir().join(format!("tre-testkit-small-v1.{}", unique()));
        std::fs::create_dir_all(&tmp).expect("temporary folder");
        write_small(&tmp);
        if std::fs::rename(&tmp, &dir).is_err() {
            // another process got there first
            let _ = std::fs::remove_dir_all(&tmp);
        }
        dir
    })
    .clone()
}

fn write_small(dir: &std::path::Path) {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    let ids: Vec<i64> = (1..=1000).collect();
    let write = |name: &str, columns: Vec<(&str, ArrayRef)>| {
        let batch = RecordBatch::try_from_iter(columns).expect("a batch");
        let file = std::fs::File::create(dir.join(name)).expect("create");
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
    };
    write(
        "participants.parquet",
        vec![
            (
                "participant_id",
                Arc::new(Int64Array::from(ids.clone())) as ArrayRef,
            ),
            (
                "sex",
                Arc::new(StringArray::from_iter_values(
                    ids.iter().map(|i| if i % 2 == 0 { "F" } else { "M" }),
                )),
            ),
            (
                "age",
                Arc::new(Int64Array::from_iter_values(
                    ids.iter().map(|i| 30 + i % 50),
                )),
            ),
        ],
    );
    write(
        "diagnoses.parquet",
        vec![
            (
                "participant_id",
                Arc::new(Int64Array::from(ids.clone())) as ArrayRef,
            ),
            (
                "icd10",
                Arc::new(StringArray::from_iter_values(
                    ids.iter().map(|i| if i % 3 == 0 { "E11" } else { "I10" }),
                )),
            ),
        ],
    );
}

/// [`small_data`] as a source root.
pub fn small_source() -> StoreRoot {
    StoreRoot::parse("source", small_data().to_str().expect("a UTF-8 path"))
        .expect("an absolute folder")
}

/// A small inventory: participants (cohort) and diagnoses, the files of
/// [`small_data`].
pub fn inventory() -> Inventory {
    let r = |d: &str, f: &str| FieldRef {
        dataset: d.into(),
        field: f.into(),
    };
    Inventory {
        version: 0,
        datasets: vec![
            Dataset {
                name: "participants".into(),
                description: String::new(),
                locations: vec!["participants.parquet".into()],
                key: "participant_id".into(),
                fields: vec![
                    field("participant_id", FieldType::Integer),
                    field("sex", FieldType::String),
                    field("age", FieldType::Integer),
                ],
            },
            Dataset {
                name: "diagnoses".into(),
                description: String::new(),
                locations: vec!["diagnoses.parquet".into()],
                key: "participant_id".into(),
                fields: vec![
                    field("participant_id", FieldType::Integer),
                    field("icd10", FieldType::String),
                ],
            },
        ],
        cohort_dataset: "participants".into(),
        collections: vec![
            DataCollection {
                name: "demographics".into(),
                description: String::new(),
                fields: vec![r("participants", "sex"), r("participants", "age")],
                files: vec![],
            },
            DataCollection {
                name: "hospital".into(),
                description: String::new(),
                fields: vec![r("diagnoses", "icd10")],
                files: vec![],
            },
        ],
        showcase: vec![r("participants", "sex")],
        cohort_fields: None,
        showcase_bins: vec![],
        file_collections: vec![],
        files: None,
    }
}

pub fn stage(id: &str, reviewers: &[&str], rule: DecisionRule) -> ReviewStage {
    ReviewStage {
        id: id.into(),
        name: id.to_uppercase(),
        reviewers: reviewers.iter().map(|r| (*r).into()).collect(),
        rule,
    }
}

/// The cast and a published environment: stage 1 `any` of `stage1`, stage 2
/// `quorum(quorum)` of `stage2`; `owner` and `collab` are in group
/// `researchers`, which the environment authorizes.
pub struct World {
    pub platform: Caller,
    pub admin: Caller,
    pub owner: Caller,
    pub collab: Caller,
    pub outsider: Caller,
    pub env: EnvironmentId,
}

/// A world on [`inventory`], its source [`small_data`].
pub async fn world(store: &Store, stage1: &[&str], stage2: &[&str], quorum: u32) -> World {
    world_at(store, small_source(), inventory(), stage1, stage2, quorum).await
}

/// [`world`] with another inventory, its source the fixtures' folder.
pub async fn world_with(
    store: &Store,
    inventory: Inventory,
    stage1: &[&str],
    stage2: &[&str],
    quorum: u32,
) -> World {
    world_at(store, fixtures_source(), inventory, stage1, stage2, quorum).await
}

/// [`world`] with another source root and inventory.
pub async fn world_at(
    store: &Store,
    source: StoreRoot,
    inventory: Inventory,
    stage1: &[&str],
    stage2: &[&str],
    quorum: u32,
) -> World {
    let platform = user(store, "platform", true, &[]).await;
    let admin = user(store, "admin", false, &[]).await;
    let owner = user(store, "owner", false, &["researchers"]).await;
    let collab = user(store, "collab", false, &["researchers"]).await;
    let outsider = user(store, "outsider", false, &[]).await;
    for r in stage1.iter().chain(stage2) {
        user(store, r, false, &[]).await;
    }
    let env = store
        .create_environment(
            &platform,
            NewEnvironment {
                name: "Biobank".into(),
                description: "test".into(),
                admins: BTreeSet::from(["admin".into()]),
                source,
            },
        )
        .await
        .expect("create environment");
    let configure = [
        EnvironmentCommand::SetInventory(inventory),
        EnvironmentCommand::SetPipeline(ReviewPipeline {
            stages: vec![
                stage("committee", stage1, DecisionRule::Any),
                stage("custodian", stage2, DecisionRule::Quorum(quorum)),
            ],
        }),
        EnvironmentCommand::SetMembers(BTreeSet::from([Principal::Group("researchers".into())])),
    ];
    for command in configure {
        store
            .configure_environment(&admin, &env.id, command)
            .await
            .expect("configure");
    }
    // published, unless it declares file collections whose files are
    // still to be uploaded and checked (then the test publishes)
    let configured = store.system_environment(&env.id).await.expect("stored");
    if configured.publish_problems().is_empty() {
        store
            .configure_environment(&admin, &env.id, EnvironmentCommand::Publish)
            .await
            .expect("publish");
    }
    World {
        platform,
        admin,
        owner,
        collab,
        outsider,
        env: env.id,
    }
}

/// A valid request body.
pub fn new_request() -> tre_domain::NewRequest {
    tre_domain::NewRequest {
        title: "BMI and type 2 diabetes".into(),
        purpose: "Association study".into(),
        cohort: serde_json::json!({"and": [{"field": "age", "op": ">=", "value": 40}, {"field": "sex", "op": "in", "values": ["F", "M"]}]}),
        collections: BTreeSet::from(["demographics".into(), "hospital".into()]),
        collaborators: BTreeSet::from(["collab".into()]),
        duration_days: 90,
    }
}

/// One message an [`SmtpSink`] accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body as sent (dot-unstuffed).
    pub data: String,
}

/// A real SMTP server on the loopback interface that accepts every message
/// and keeps it: enough of RFC 5321 for an SMTP client to deliver.
pub struct SmtpSink {
    pub port: u16,
    pub mails: Arc<Mutex<Vec<Mail>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mails: Arc<Mutex<Vec<Mail>>> = Arc::default();
        let store = mails.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    break;
                };
                let store = store.clone();
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = tokio::io::BufReader::new(read);
                    let mut line = String::new();
                    let _ = write.write_all(b"220 sink ESMTP ready\r\n").await;
                    let (mut from, mut to) = (String::new(), Vec::new());
                    loop {
                        line.clear();
                        match tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let command = line.trim_end().to_owned();
                        let upper = command.to_ascii_uppercase();
                        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO")
                        {
                            b"250-sink\r\n250 8BITMIME\r\n"
                        } else if upper.starts_with("MAIL FROM:") {
                            from = command[10..].trim().trim_matches(['<', '>']).to_owned();
                            b"250 OK\r\n"
                        } else if upper.starts_with("RCPT TO:") {
                            to.push(command[8..].trim().trim_matches(['<', '>']).to_owned());
                            b"250 OK\r\n"
                        } else if upper == "DATA" {
                            let _ = write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await;
                            let mut data = String::new();
                            loop {
                                line.clear();
                                match tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line)
                                    .await
                                {
                                    Ok(0) | Err(_) => return,
                                    Ok(_) => {}
                                }
                                if line == ".\r\n" || line == ".\n" {
                                    break;
                                }
                                data.push_str(line.strip_prefix('.').unwrap_or(&line));
                            }
                            store.lock().expect("lock").push(Mail {
                                from: std::mem::take(&mut from),
                                to: std::mem::take(&mut to),
                                data,
                            });
                            b"250 OK queued\r\n"
                        } else if upper == "QUIT" {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        } else {
                            b"250 OK\r\n"
                        };
                        if write.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { port, mails, task }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().expect("lock").clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The repository root (fixtures are relative to it).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The folder of the synthetic biobank's Parquet files: the source root of
/// the tests' environments ([`BIOBANK`] locations are relative to it).
pub fn fixtures_data() -> std::path::PathBuf {
    std::fs::canonicalize(repo_root().join("fixtures/data")).expect("fixtures/data")
}

/// [`fixtures_data`] as a source root.
pub fn fixtures_source() -> StoreRoot {
    StoreRoot::parse("source", fixtures_data().to_str().expect("a UTF-8 path"))
        .expect("an absolute folder")
}

/// Submits `id` as `caller` and records the `count_cohort` job's outcome as
/// the job would (`count` participants): for store tests, which run no
/// worker. Returns the request after the count.
pub async fn submit_counted(
    store: &Store,
    caller: &Caller,
    id: &RequestId,
    count: u64,
) -> AccessRequest {
    let submitted = store
        .request_command(caller, id, tre_domain::RequestCommand::Submit)
        .await
        .expect("submit");
    assert_eq!(submitted.state, RequestState::Checking);
    store
        .record_cohort_count(id, submitted.round, CohortCount::Counted(count), "test")
        .await
        .expect("record the cohort count")
}

/// Waits (bounded) until a running worker's `count_cohort` job has moved a
/// submitted request out of `checking`; returns it.
pub async fn counted(store: &Store, id: &RequestId) -> AccessRequest {
    for _ in 0..1200 {
        let request = store.system_request(id).await.expect("request");
        if request.state != RequestState::Checking {
            return request;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("request {id} was never counted: is a worker running?");
}

/// The synthetic biobank of `fixtures/data` (fields read from the Parquet
/// footers under `root`), with collections `baseline` and `hospital`
/// approved in tests, and `deprivation` and `prescriptions` that tests
/// leave unapproved. Cohorts may be selected on the fields of the showcase
/// (sex, recruitment centre, year of birth) and of the selected collections.
pub fn biobank_inventory(root: &std::path::Path, datasets: &[(&str, &[&str])]) -> Inventory {
    let r = |d: &str, f: &str| FieldRef {
        dataset: d.into(),
        field: f.into(),
    };
    let datasets = datasets
        .iter()
        .map(|(name, locations)| {
            let fields = tre_dispense::schema::parquet_fields(&root.join(locations[0]))
                .expect("fixture footer");
            Dataset {
                name: (*name).into(),
                description: String::new(),
                locations: locations.iter().map(|l| (*l).to_owned()).collect(),
                key: "participant_id".into(),
                fields,
            }
        })
        .collect();
    let collection = |name: &str, fields: Vec<FieldRef>| DataCollection {
        name: name.into(),
        description: String::new(),
        fields,
        files: vec![],
    };
    Inventory {
        version: 0,
        datasets,
        cohort_dataset: "participants".into(),
        collections: vec![
            collection(
                "baseline",
                vec![
                    r("participants", "sex"),
                    r("participants", "age_at_recruitment"),
                    r("participants", "bmi"),
                    r("participants", "diabetes"),
                    r("participants", "recruitment_date"),
                    r("participants", "smoking_status"),
                ],
            ),
            collection(
                "hospital",
                vec![
                    r("hospital_episodes", "admission_date"),
                    r("hospital_episodes", "icd10"),
                    r("hospital_episodes", "length_of_stay_days"),
                ],
            ),
            collection("deprivation", vec![r("participants", "townsend_index")]),
            collection("prescriptions", vec![r("prescriptions", "drug")]),
        ],
        showcase: vec![
            r("participants", "sex"),
            r("participants", "recruitment_centre"),
            r("participants", "year_of_birth"),
        ],
        cohort_fields: None,
        showcase_bins: vec![],
        file_collections: vec![],
        files: None,
    }
}

/// The checked-in fixture files, by dataset, relative to [`fixtures_data`].
pub const BIOBANK: [(&str, &[&str]); 3] = [
    ("participants", &["participants.parquet"]),
    (
        "hospital_episodes",
        &["hospital_episodes-0.parquet", "hospital_episodes-1.parquet"],
    ),
    ("prescriptions", &["prescriptions.parquet"]),
];

/// Approves a request waiting at stage 1: `rev1` decides stage 1, `rev2`
/// stage 2 (the reviewers of a [`world`] made with those names).
pub async fn approve_both_stages(store: &Store, id: &RequestId) -> AccessRequest {
    let mut request = None;
    for (reviewer, stage) in [("rev1", 0), ("rev2", 1)] {
        let decision = tre_domain::DecisionInput {
            stage,
            verdict: tre_domain::Verdict::Approve,
            is_final: false,
            comment: String::new(),
        };
        request = Some(
            store
                .decide(&caller(reviewer), id, decision)
                .await
                .expect("approve"),
        );
    }
    let request = request.expect("two stages");
    assert_eq!(request.state, RequestState::Approved);
    request
}

/// Creates `new` as `w.owner`, submits it, waits for a running worker to
/// count its cohort (which must pass), and approves it
/// ([`approve_both_stages`]).
pub async fn approved_request(
    store: &Store,
    w: &World,
    new: tre_domain::NewRequest,
) -> AccessRequest {
    let request = store
        .create_request(&w.owner, &w.env, new)
        .await
        .expect("create request");
    store
        .request_command(&w.owner, &request.id, tre_domain::RequestCommand::Submit)
        .await
        .expect("submit");
    let counted = counted(store, &request.id).await;
    assert_eq!(
        counted.state,
        RequestState::InReview { stage: 0 },
        "the cohort passed its count"
    );
    approve_both_stages(store, &request.id).await
}

/// An approved request ([`approved_request`]) of `cohort` and
/// `collections`, with `collab`, and its project, created by the owner. A
/// worker must be running: it counts the cohort before review.
pub async fn approved_project(
    store: &Store,
    w: &World,
    cohort: serde_json::Value,
    collections: &[&str],
) -> tre_domain::Project {
    let request = approved_request(store, w, selecting(cohort, collections)).await;
    store
        .create_project(&w.owner, &request.id)
        .await
        .expect("create project")
}

/// [`new_request`] with `cohort` and `collections`.
pub fn selecting(cohort: serde_json::Value, collections: &[&str]) -> tre_domain::NewRequest {
    tre_domain::NewRequest {
        cohort,
        collections: collections.iter().map(|c| (*c).to_owned()).collect(),
        ..new_request()
    }
}

/// `len` deterministic bytes that do not compress (a 64-bit LCG, seeded).
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An S3-compatible server (s3s-fs over a temporary folder) served by this
/// process on a random port, with signature checks on. Buckets are
/// folders: `bucket` exists from the start.
pub struct S3Server {
    pub endpoint: String,
    pub bucket: String,
    pub dir: std::path::PathBuf,
    /// Server-side copies (CopyObject requests) served so far.
    pub copies: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

pub const S3_ACCESS_KEY: &str = "tre-test";
pub const S3_SECRET_KEY: &str = "tre-test-secret-key";

impl S3Server {
    pub async fn start() -> Self {
        Self::start_with_part_delay(Duration::ZERO).await
    }

    /// A server that answers each multipart part upload after `delay` (a
    /// slow link, so a test can stop a worker in the middle of a large
    /// file's upload).
    pub async fn start_with_part_delay(delay: Duration) -> Self {
        let dir = std::env::temp_dir().join(format!("tre-s3-{}", unique()));
        let bucket = "tre-projects".to_owned();
        std::fs::create_dir_all(dir.join(&bucket)).expect("bucket folder");
        let fs = s3s_fs::FileSystem::new(&dir).expect("s3s-fs");
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(
            S3_ACCESS_KEY,
            S3_SECRET_KEY,
        ));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let copies = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = copies.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                // without it each GET on a kept-alive connection waits ~22 ms
                let _ = socket.set_nodelay(true);
                let service = service.clone();
                let counted = counted.clone();
                let delayed = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let service = service.clone();
                    let part = req.uri().query().is_some_and(|q| q.contains("partNumber="));
                    if req.headers().contains_key("x-amz-copy-source") {
                        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    async move {
                        if part && !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        hyper::service::Service::call(&service, req).await
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), delayed)
                        .await;
                });
            }
        });
        Self {
            endpoint,
            bucket,
            dir,
            copies,
            task,
        }
    }

    /// A client of the bucket, through `endpoint` (e.g. a proxy in front).
    pub fn store_via(&self, endpoint: &str) -> Arc<dyn ObjectStore> {
        tre_dispense::stores::s3(endpoint, &self.bucket, S3_ACCESS_KEY, S3_SECRET_KEY)
            .expect("s3 client")
    }

    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store_via(&self.endpoint)
    }

    /// The multipart uploads started and neither completed nor aborted:
    /// s3s-fs keeps each as `.upload*` files in its folder.
    pub fn unfinished_uploads(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if entry.file_name().to_string_lossy().starts_with(".upload") {
                    found.push(path.display().to_string());
                }
            }
        }
        found
    }

    /// The `AWS_*` variables that point a `tre` process at this server
    /// (with `TRE_OBJECT_STORE=s3://BUCKET`).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("TRE_OBJECT_STORE", format!("s3://{}", self.bucket)),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
