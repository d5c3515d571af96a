//! Authorization before anything else: a caller who may not use a route is
//! refused from the token and the path alone, before a byte of the body is
//! read (a large upload is answered at once), before the body is validated
//! (no 422 that says what the route expects), and user names cannot be
//! told apart by whether they exist. On SQLite and on PostgreSQL.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tre_testkit::TestDb;

use crate::support::*;

/// Sends a request head announcing `length` bytes of body, then only the
/// first `sent` of them, and returns the status of the answer, which must
/// come while the rest of the body is still unsent.
async fn answer_to_a_partial_body(
    api: &Api,
    who: &str,
    head: &str,
    content_type: &str,
    length: usize,
    sent: usize,
) -> u16 {
    let address = api.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "{head} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n",
        api.tokens[who]
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(&vec![b'x'; sent]).await.unwrap();
    // the rest of the body is never sent: a server that waits for it never
    // answers, and this read gives up
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buffer).await.unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "{head} as {who}: no answer before the body");
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{head}: not an HTTP answer: {text}"))
}

async fn authorization_comes_first(db: TestDb) {
    let api = Api::start_on(db).await;
    let env = published(&api).await;
    let (request, project) = in_review_and_project(&api, &env).await;
    let before = api.db.store.verify_audit().await.unwrap().head_seq;

    // every route with a body, as a researcher of the environment and as an
    // outsider, with an incomplete body and a malformed one: refused as the
    // same call with a good body would be, never validated first
    let mut checked = 0;
    for (method, path, url, media) in body_operations(&api, &env, &request, &project) {
        for who in ["outsider", "member"] {
            // routes these callers may use: their own tokens, a new request
            // (its environment is named in the body), the showcase of an
            // environment the researcher belongs to
            if path == "/v1/tokens"
                || path == "/v1/requests"
                || (who == "member" && path.ends_with("/showcase/query"))
            {
                continue;
            }
            let json = media.iter().any(|m| m == "application/json");
            let content_type = if json {
                "application/json"
            } else {
                "text/tab-separated-values"
            };
            let mut answers = Vec::new();
            for body in [&b"{}"[..], b"{\"unfinished\": ", b"entity\tcollection\n"] {
                let response = api
                    .client
                    .request(method.clone(), &url)
                    .bearer_auth(&api.tokens[who])
                    .header("content-type", content_type)
                    .body(body.to_vec())
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let answer: Value = response.json().await.unwrap();
                assert!(
                    status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
                    "{method} {path} as {who} with {:?}: {status} {answer}",
                    String::from_utf8_lossy(body)
                );
                answers.push((status, answer["error"]["code"].clone()));
            }
            answers.dedup();
            assert_eq!(answers.len(), 1, "{method} {path} as {who}: {answers:?}");
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked}");
    // the case: a researcher's incomplete environment
    let (status, answer) = api
        .call(
            "member",
            Method::POST,
            "/v1/environments",
            Some(json!({"description": "no name, no source"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");

    // a 200 MiB file inventory from a researcher: 403 before the body
    let files = format!("PUT /v1/environments/{env}/inventory/files");
    let tsv = "text/tab-separated-values";
    let status = answer_to_a_partial_body(&api, "member", &files, tsv, 200 << 20, 64 << 10).await;
    assert_eq!(status, 403);
    let status = answer_to_a_partial_body(&api, "outsider", &files, tsv, 200 << 20, 64 << 10).await;
    assert_eq!(status, 404);
    // bodies over a route's limit: 413 from the announced length, at once,
    // even to the environment's admin
    let status = answer_to_a_partial_body(&api, "admin", &files, tsv, 300 << 20, 64 << 10).await;
    assert_eq!(status, 413);
    let policies = format!("PUT /v1/environments/{env}/policies");
    let json_type = "application/json";
    let status = answer_to_a_partial_body(&api, "admin", &policies, json_type, 2 << 20, 1024).await;
    assert_eq!(status, 413);
    let post = format!("POST /v1/requests/{request}/decisions");
    let status = answer_to_a_partial_body(&api, "rev1", &post, json_type, 2 << 20, 1024).await;
    assert_eq!(status, 413);

    // collaborators: a name that is nobody's and a user who may not use the
    // environment get one answer
    let mut said = Vec::new();
    for name in ["outsider", "no-such-user-at-all"] {
        let draft = api.draft(&env).await;
        let (status, answer) = api
            .call(
                "owner",
                Method::PUT,
                &format!("/v1/requests/{draft}/collaborators"),
                Some(json!({"collaborators": [name]})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        said.push(answer.to_string().replace(name, "NAME"));
    }
    assert_eq!(said[0], said[1]);
    // nothing that was refused wrote anything (the drafts above did)
    let events = api.db.store.verify_audit().await.unwrap().head_seq - before;
    assert_eq!(events, 2, "two drafts, nothing else");
    api.db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_comes_first_on_sqlite() {
    authorization_comes_first(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_comes_first_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    authorization_comes_first(db).await;
}
