//! Members reach their project's dispensed data through the API, under the
//! environment's `download` policy, on a local folder (bytes streamed by
//! the API, with `Range`) and on an S3 server (a redirect to a signed URL):
//! each read audited, outsiders, admins and reviewers refused, traversal
//! refused, and a revoked project gone (410) at once.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tre_testkit::UseCases;

use common::{dispense_options, settled, start, temp_store};
use reqwest::{Client, StatusCode, redirect};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tre_api::AppState;
use tre_dispense::stores::ProjectReader;
use tre_domain::{
    DownloadPolicy, EnvironmentCommand, Policies, ProjectState, RequestCommand, UserId,
};
use tre_jobs::EmbeddedQueue;
use tre_store::{NewToken, Store};
use tre_testkit::TokenActor;
use tre_testkit::{
    BIOBANK, S3_ACCESS_KEY, S3_SECRET_KEY, S3Server, TestDb, approved_project, biobank_inventory,
    fixtures_data, world_with,
};

struct Api {
    base: String,
    client: Client,
    tokens: BTreeMap<&'static str, String>,
}

impl Api {
    async fn start(store: &Store, reader: ProjectReader, users: &[&'static str]) -> Self {
        let mut tokens = BTreeMap::new();
        for user in users {
            let (_, token) = store
                .app()
                .create_token(
                    TokenActor::Operator { trace_id: "test" },
                    &UserId((*user).into()),
                    NewToken {
                        name: "test".into(),
                        days: None,
                    },
                )
                .await
                .unwrap();
            tokens.insert(*user, token);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = AppState::new(store.clone()).with_project_data(reader);
        tokio::spawn(tre_api::serve(listener, state, std::future::pending()));
        let client = Client::builder()
            .redirect(redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            base,
            client,
            tokens,
        }
    }

    async fn send(
        &self,
        who: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.tokens[who]);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }

    /// Waits (bounded) until `who`'s token is refused, as every process
    /// must within a second.
    async fn refused_soon(&self, who: &str, path: &str) {
        for _ in 0..100 {
            if self.get(who, path, None).await.status() == StatusCode::UNAUTHORIZED {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{who}'s token still works");
    }

    async fn get(&self, who: &str, path: &str, range: Option<&str>) -> reqwest::Response {
        let mut req = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.tokens[who]);
        if let Some(range) = range {
            req = req.header("range", range);
        }
        req.send().await.unwrap()
    }
}

/// What one read of `path` brought: the bytes, whether streamed by the API
/// or fetched from the signed URL it redirected to.
async fn read(api: &Api, who: &str, project: &str, path: &str) -> Vec<u8> {
    let answer = api
        .get(who, &format!("/v1/projects/{project}/objects/{path}"), None)
        .await;
    match answer.status() {
        StatusCode::OK => answer.bytes().await.unwrap().to_vec(),
        StatusCode::TEMPORARY_REDIRECT => {
            let url = answer.headers()["location"].to_str().unwrap().to_owned();
            let body: Value = answer.json().await.unwrap();
            assert_eq!(body["url"], url.as_str());
            assert_eq!(body["expires_in_s"], 300);
            // the signed URL works without tre's token
            let fetched = Client::new().get(&url).send().await.unwrap();
            assert_eq!(fetched.status(), StatusCode::OK, "{url}");
            fetched.bytes().await.unwrap().to_vec()
        }
        other => panic!("{path}: {other} {}", answer.text().await.unwrap()),
    }
}

async fn set_download(store: &Store, w: &tre_testkit::World, download: DownloadPolicy) {
    store
        .app()
        .configure_environment(
            &w.admin,
            &w.env,
            EnvironmentCommand::SetPolicies(Policies {
                download,
                ..Policies::default()
            }),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_reach_their_data_under_policy_and_nobody_else_does() {
    let s3 = S3Server::start().await;
    let (folder, local) = temp_store("project-data");
    let cases = [
        (
            "folder",
            local,
            ProjectReader::open(folder.to_str().unwrap(), "object_store").unwrap(),
        ),
        (
            "s3",
            s3.store(),
            ProjectReader::s3(&s3.endpoint, &s3.bucket, S3_ACCESS_KEY, S3_SECRET_KEY).unwrap(),
        ),
    ];
    for (name, dest, reader) in cases {
        // the folder on SQLite, S3 on PostgreSQL (when it answers)
        let postgres = match name {
            "s3" => TestDb::postgres().await,
            _ => None,
        };
        let db = match postgres {
            Some(db) => db,
            None => TestDb::sqlite().await,
        };
        let store = &db.store;
        let inventory = biobank_inventory(&fixtures_data(), &BIOBANK);
        let w = world_with(store, inventory, &["rev1"], &["rev2"], 1).await;
        let worker = start(
            store,
            Arc::new(EmbeddedQueue::default()),
            dispense_options(dest.clone(), 100_000),
        );
        let project = approved_project(
            store,
            &w,
            json!({"field": "age_at_recruitment", "op": ">=", "value": 60}),
            &["baseline"],
        )
        .await;
        let project = settled(store, &project).await;
        assert_eq!(project.state, ProjectState::Ready, "{name}: {project:?}");
        let id = project.id.as_str();
        let mut api = Api::start(
            store,
            reader,
            &["owner", "collab", "admin", "outsider", "rev1", "platform"],
        )
        .await;

        // members list what the manifest lists; nobody else learns the project exists
        let listed = api
            .get("owner", &format!("/v1/projects/{id}/objects"), None)
            .await;
        assert_eq!(listed.status(), StatusCode::OK, "{name}");
        let listed: Value = listed.json().await.unwrap();
        let objects = listed["items"].as_array().unwrap().clone();
        assert!(
            objects.iter().any(|o| o["path"] == "manifest.json"),
            "{listed}"
        );
        let table = objects
            .iter()
            .find(|o| o["kind"] == "dataset")
            .expect("a table file")
            .clone();
        let table_path = table["path"].as_str().unwrap();
        for who in ["admin", "outsider", "rev1", "platform"] {
            let answer = api
                .get(who, &format!("/v1/projects/{id}/objects"), None)
                .await;
            assert_eq!(
                answer.status(),
                StatusCode::NOT_FOUND,
                "{name}: {who} lists"
            );
            let answer = api
                .get(
                    who,
                    &format!("/v1/projects/{id}/objects/{table_path}"),
                    None,
                )
                .await;
            assert_eq!(
                answer.status(),
                StatusCode::NOT_FOUND,
                "{name}: {who} reads"
            );
        }

        // the default policy: only workspaces read; members may not
        let path = format!("/v1/projects/{id}/objects/{table_path}");
        let answer = api.get("owner", &path, None).await;
        assert_eq!(
            answer.status(),
            StatusCode::FORBIDDEN,
            "{name}: workspace policy"
        );
        // a member registers the project's compute; its token reads the data
        let workspaces = format!("/v1/projects/{id}/workspaces");
        for (ws, key) in [("analysis", "ws1"), ("second", "ws2")] {
            let made = api
                .send(
                    "owner",
                    reqwest::Method::POST,
                    &workspaces,
                    Some(json!({"name": ws})),
                )
                .await;
            assert_eq!(made.status(), StatusCode::CREATED, "{name}");
            let made: Value = made.json().await.unwrap();
            api.tokens
                .insert(key, made["secret"].as_str().unwrap().to_owned());
        }
        let again = api
            .send(
                "collab",
                reqwest::Method::POST,
                &workspaces,
                Some(json!({"name": "analysis"})),
            )
            .await;
        assert_eq!(
            again.status(),
            StatusCode::CONFLICT,
            "{name}: one name once"
        );
        let bytes = read(&api, "ws1", id, table_path).await;
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            table["sha256"],
            "{name}"
        );
        let workspace_reads = 1;
        // ...and reaches nothing else
        for other in [
            "/v1/environments".to_owned(),
            "/v1/projects".to_owned(),
            "/v1/requests".to_owned(),
            "/v1/tokens".to_owned(),
            workspaces.clone(),
        ] {
            let answer = api.get("ws1", &other, None).await;
            assert_eq!(
                answer.status(),
                StatusCode::FORBIDDEN,
                "{name}: ws1 {other}"
            );
        }
        let made = api
            .send(
                "ws1",
                reqwest::Method::POST,
                &workspaces,
                Some(json!({"name": "mine"})),
            )
            .await;
        assert_eq!(
            made.status(),
            StatusCode::FORBIDDEN,
            "{name}: a workspace makes none"
        );
        for who in ["admin", "outsider", "rev1"] {
            let answer = api.get(who, &workspaces, None).await;
            assert_eq!(
                answer.status(),
                StatusCode::NOT_FOUND,
                "{name}: {who} workspaces"
            );
        }
        let listed: Value = api
            .get("collab", &workspaces, None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(listed["items"].as_array().unwrap().len(), 2, "{listed}");
        // revoked by a member: refused within a second
        let revoked = api
            .send(
                "collab",
                reqwest::Method::DELETE,
                &format!("{workspaces}/analysis"),
                None,
            )
            .await;
        assert_eq!(revoked.status(), StatusCode::OK, "{name}");
        api.refused_soon("ws1", &format!("/v1/projects/{id}/objects"))
            .await;
        set_download(store, &w, DownloadPolicy::Forbidden).await;
        for who in ["collab", "ws2"] {
            assert_eq!(
                api.get(who, &path, None).await.status(),
                StatusCode::FORBIDDEN,
                "{name}: forbidden policy, {who}"
            );
        }
        set_download(store, &w, DownloadPolicy::Members).await;

        // members read: the bytes are the manifest's
        let mut reads = 0;
        for who in ["owner", "collab"] {
            let bytes = read(&api, who, id, table_path).await;
            reads += 1;
            assert_eq!(bytes.len() as u64, table["bytes"].as_u64().unwrap());
            assert_eq!(
                hex::encode(Sha256::digest(&bytes)),
                table["sha256"],
                "{name}"
            );
        }
        let manifest = read(&api, "owner", id, "manifest.json").await;
        reads += 1;
        let manifest_sha = objects
            .iter()
            .find(|o| o["path"] == "manifest.json")
            .unwrap()["sha256"]
            .clone();
        assert_eq!(hex::encode(Sha256::digest(&manifest)), manifest_sha);
        if name == "folder" {
            let whole = read(&api, "owner", id, table_path).await;
            reads += 1;
            let part = api.get("owner", &path, Some("bytes=4-13")).await;
            reads += 1;
            assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
            assert_eq!(
                part.headers()["content-range"],
                format!("bytes 4-13/{}", whole.len()).as_str()
            );
            assert_eq!(part.bytes().await.unwrap().as_ref(), &whole[4..14]);
            let past = api
                .get("owner", &path, Some(&format!("bytes={}-", whole.len())))
                .await;
            reads += 1;
            assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        }

        // nothing outside the manifest, and no way out of the project
        for (bad, status) in [
            // a URL's `..` is resolved by the client: it reaches no route
            ("../other/manifest.json", StatusCode::NOT_FOUND),
            // so is `%2e%2e`; encoded once more, it arrives as `%2e%2e`
            ("%2e%2e/manifest.json", StatusCode::NOT_FOUND),
            ("%252e%252e/manifest.json", StatusCode::UNPROCESSABLE_ENTITY),
            ("a%252Fb", StatusCode::UNPROCESSABLE_ENTITY),
            ("a%2F..%2Fb", StatusCode::UNPROCESSABLE_ENTITY),
            ("participants//x", StatusCode::UNPROCESSABLE_ENTITY),
            ("not-in-the-manifest.parquet", StatusCode::NOT_FOUND),
        ] {
            let answer = api
                .get("owner", &format!("/v1/projects/{id}/objects/{bad}"), None)
                .await;
            assert_eq!(answer.status(), status, "{name}: {bad}");
        }

        // every read is in the audit log, with its object and URL expiry
        let events = store
            .app()
            .audit_events(
                &w.platform,
                &tre_store::AuditQuery {
                    object_id: Some(id.to_owned()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let read_events: Vec<_> = events
            .iter()
            .filter(|e| e.action == "project.object_read")
            .collect();
        assert_eq!(
            read_events.len(),
            reads + workspace_reads,
            "{name}: one event per read"
        );
        assert!(read_events.iter().all(|e| {
            serde_json::from_str::<Value>(&e.details).unwrap()["url_expires_at"].is_i64()
        }));

        // the admins see who read how much, never the data; nobody else does
        let access = api
            .get("admin", &format!("/v1/projects/{id}/access"), None)
            .await;
        assert_eq!(access.status(), StatusCode::OK, "{name}");
        let access: Value = access.json().await.unwrap();
        let lines = access["items"].as_array().unwrap();
        let total: u64 = lines.iter().map(|l| l["reads"].as_u64().unwrap()).sum();
        assert_eq!(total as usize, reads + workspace_reads, "{name}: {access}");
        let readers: Vec<&str> = lines
            .iter()
            .map(|l| l["reader"].as_str().unwrap())
            .collect();
        assert!(
            readers.contains(&"owner") && readers.contains(&"collab"),
            "{access}"
        );
        assert!(
            readers.iter().any(|r| r.starts_with("ws.analysis.")),
            "{access}"
        );
        for (who, status) in [
            ("owner", StatusCode::FORBIDDEN),
            ("outsider", StatusCode::NOT_FOUND),
            ("ws2", StatusCode::FORBIDDEN),
        ] {
            let answer = api
                .get(who, &format!("/v1/projects/{id}/access"), None)
                .await;
            assert_eq!(
                answer.status(),
                status,
                "{name}: {who} sees the access summary"
            );
        }

        // revoked: gone at once, for listing and reading
        store
            .app()
            .request_command(
                &w.admin,
                &project.request_id,
                RequestCommand::Revoke {
                    reason: "consent withdrawn".into(),
                },
            )
            .await
            .unwrap();
        for _ in 0..400 {
            if store.project(&project.id).await.unwrap().state == ProjectState::Revoked {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        for url in [format!("/v1/projects/{id}/objects"), path.clone()] {
            let answer = api.get("owner", &url, None).await;
            assert_eq!(answer.status(), StatusCode::GONE, "{name}: {url}");
        }
        // the project's workspaces ended with it
        api.refused_soon("ws2", &format!("/v1/projects/{id}/objects"))
            .await;
        worker.stop(Duration::from_secs(20)).await;
        db.finish().await;
    }
    let _ = std::fs::remove_dir_all(folder);
}

/// A signed URL works before its expiry and is refused after it: the
/// bound on access after a project ends is the URL's lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_url_stops_working_when_it_expires() {
    use object_store::ObjectStoreExt;
    let s3 = S3Server::start().await;
    let reader = ProjectReader::s3(&s3.endpoint, &s3.bucket, S3_ACCESS_KEY, S3_SECRET_KEY).unwrap();
    let location = ProjectReader::location("p1", "data/x.bin").unwrap();
    s3.store()
        .put(
            &location,
            bytes::Bytes::from_static(b"dispensed bytes").into(),
        )
        .await
        .unwrap();
    let url = reader
        .signed_url("p1", "data/x.bin", Duration::from_secs(1))
        .await
        .unwrap()
        .expect("S3 signs");
    let fresh = Client::new().get(&url).send().await.unwrap();
    assert_eq!(fresh.status(), StatusCode::OK);
    assert_eq!(fresh.bytes().await.unwrap().as_ref(), b"dispensed bytes");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let stale = Client::new().get(&url).send().await.unwrap();
    assert_eq!(
        stale.status(),
        StatusCode::FORBIDDEN,
        "an expired URL is refused"
    );
}
