//! No secret handed out is ever at rest: every route that mints a token is
//! called with an `Idempotency-Key` (and replayed), then every table of the
//! database (SQLite: the database file and its write-ahead log, every page;
//! PostgreSQL: every row of every table, as text) and every log line the
//! process wrote are searched for each secret. A replay answers the same
//! call without its secret and says so. Run on SQLite and on PostgreSQL.

#[path = "support/mod.rs"]
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::*;
use tre_testkit::TestDb;

/// Every log line of this test binary, at every level.
fn captured() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .init();
        logs
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// POSTs `body` to `path` as `who` with `Idempotency-Key: key`.
async fn post(api: &Api, who: &str, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
    let response = api
        .client
        .post(format!("{}{path}", api.base))
        .bearer_auth(&api.tokens[who])
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let replayed = response.headers().contains_key("idempotent-replayed");
    let status = response.status();
    let mut value: Value = response.json().await.unwrap();
    value["_replayed"] = json!(replayed);
    (status, value)
}

/// Calls a minting route twice with one key: the first answer holds the
/// secret, the replay the same answer without it. Returns the secret.
async fn minted_once(api: &Api, who: &str, path: &str, key: &str, body: Value) -> String {
    let (status, first) = post(api, who, path, key, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{path}: {first}");
    assert_eq!(first["_replayed"], false);
    let secret = first["secret"].as_str().expect("a secret").to_owned();
    assert!(first.get("secret_withheld").is_none(), "{first}");
    let (status, again) = post(api, who, path, key, body).await;
    assert_eq!(status, StatusCode::CREATED, "{path}: {again}");
    assert_eq!(again["_replayed"], true, "{again}");
    assert!(
        again.get("secret").is_none(),
        "a replay holds no secret: {again}"
    );
    assert_eq!(again["secret_withheld"], true, "{again}");
    // the rest of the answer is the first one's
    let mut without = first.clone();
    let object = without.as_object_mut().unwrap();
    object.remove("secret");
    object.insert("secret_withheld".into(), json!(true));
    object.insert("_replayed".into(), json!(true));
    assert_eq!(without, again);
    secret
}

/// Everything the database holds, as text or bytes to search.
async fn database_contents(db: &TestDb) -> Vec<u8> {
    if let Some(path) = db.url.strip_prefix("sqlite://") {
        // every page of the file and of its write-ahead log, free ones too
        let mut bytes = std::fs::read(path).unwrap();
        if let Ok(wal) = std::fs::read(format!("{path}-wal")) {
            bytes.extend(wal);
        }
        return bytes;
    }
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(tables.len() > 10, "the schema's tables: {tables:?}");
    let mut out = Vec::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT CAST(t AS text) FROM \"{table}\" t"
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for row in rows {
            out.extend(row.into_bytes());
            out.push(b'\n');
        }
    }
    out
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn no_secret_at_rest(db: TestDb) {
    let logs = captured();
    let api = Api::start_on(db).await;
    let env = published(&api).await;
    let mut secrets: Vec<String> = api.tokens.values().cloned().collect();

    // tokens: the caller's own, and a platform admin's for someone else
    secrets.push(minted_once(&api, "owner", "/v1/tokens", "t1", json!({"name": "laptop"})).await);
    secrets.push(
        minted_once(
            &api,
            "platform",
            "/v1/tokens?user=collab",
            "t2",
            json!({"name": "pipeline", "days": 7}),
        )
        .await,
    );
    // a workspace of an approved request's project
    let (_, project) = in_review_and_project(&api, &env).await;
    secrets.push(
        minted_once(
            &api,
            "collab",
            &format!("/v1/projects/{project}/workspaces"),
            "w1",
            json!({"name": "matrix"}),
        )
        .await,
    );
    // the minted tokens work: they are real secrets, not placeholders
    for secret in &secrets[secrets.len() - 3..] {
        let status = api
            .client
            .get(format!("{}/v1/projects/{project}", api.base))
            .bearer_auth(secret)
            .send()
            .await
            .unwrap()
            .status();
        assert_ne!(status, StatusCode::UNAUTHORIZED);
    }

    // every row of every table, and every log line, without any of them
    api.db.store.seal_audit().await.unwrap();
    let stored = database_contents(&api.db).await;
    assert!(holds(&stored, &project), "the scan reads the rows");
    let logs = logs.lock().unwrap().clone();
    assert!(!logs.is_empty(), "the logs were captured");
    for secret in &secrets {
        assert!(!holds(&stored, secret), "a secret is stored in plain text");
        assert!(!holds(&logs, secret), "a secret is in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_at_rest_on_sqlite() {
    no_secret_at_rest(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_at_rest_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    no_secret_at_rest(db).await;
}
