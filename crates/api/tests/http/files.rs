//! Bulk files: file inventories over HTTP.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

/// A file inventory over HTTP: TSV only, its admins only, in maintenance;
/// bad rows named by line with nothing stored; a good one accepted for its
/// check (202) and listed for the admins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_inventories_over_http() {
    let api = Api::start().await;
    let env = published(&api).await;
    let e = |suffix: &str| format!("/v1/environments/{env}{suffix}");
    let upload = |who: &str, content_type: &str, body: &str| {
        let mut req = api
            .client
            .put(format!("{}{}", api.base, e("/inventory/files")))
            .header("content-type", content_type)
            .body(body.to_owned());
        if let Some(token) = api.tokens.get(who) {
            req = req.bearer_auth(token);
        }
        req.send()
    };
    let good = "entity\tcollection\tlocation\tsize\n1\tscans\tscans/1.nii\t10\n";
    // active: refused, the version is frozen
    let response = upload("admin", "text/tab-separated-values", good)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    api.ok("admin", Method::POST, &e("/maintenance"), None)
        .await;
    // the kinds of files are declared first (a staged version)
    let mut inv = inventory();
    inv["file_collections"] = json!([{"name": "scans"}]);
    api.ok("admin", Method::PUT, &e("/inventory"), Some(inv))
        .await;
    for (who, status) in [
        ("owner", StatusCode::FORBIDDEN),
        ("outsider", StatusCode::NOT_FOUND),
        // its creator finds it, and may not change it
        ("platform", StatusCode::FORBIDDEN),
        ("nobody", StatusCode::UNAUTHORIZED),
    ] {
        let response = upload(who, "text/tab-separated-values", good)
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{who}");
    }
    let response = upload("admin", "text/csv", good).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // registered from the source: the location is a path inside it
    for bad in ["/etc/passwd", "../other/files.tsv", "a%2f..%2fb.tsv"] {
        let response = upload(
            "admin",
            "application/json",
            &json!({"location": bad}).to_string(),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["field"], "location", "{bad}");
    }
    let bad = format!("{good}2\tgenomes\tg/2.vcf\t5\n3\tscans\t../up.nii\t5\n");
    let response = upload("admin", "text/tab-separated-values", &bad)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["field"], "files");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("line 3: unknown file collection \"genomes\"")
            && message.contains("line 4: location \"../up.nii\""),
        "{message}"
    );
    let (status, listed) = api
        .call("admin", Method::GET, &e("/inventory/files"), None)
        .await;
    assert_eq!(
        (status, listed),
        (StatusCode::OK, json!([])),
        "nothing stored"
    );

    // the same rows as Parquet, with a bad one: refused by line
    let parquet = |rows: &[(&str, &str, &str, i64)]| -> Vec<u8> {
        use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
        use std::sync::Arc;
        let text = |i: usize| -> ArrayRef {
            Arc::new(StringArray::from(
                rows.iter()
                    .map(|r| [r.0, r.1, r.2][i].to_owned())
                    .collect::<Vec<_>>(),
            ))
        };
        let batch = RecordBatch::try_from_iter([
            ("entity", text(0)),
            ("collection", text(1)),
            ("location", text(2)),
            (
                "size",
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                )) as ArrayRef,
            ),
        ])
        .unwrap();
        let mut bytes = Vec::new();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        bytes
    };
    let send_parquet = |bytes: Vec<u8>| {
        api.client
            .put(format!("{}{}", api.base, e("/inventory/files")))
            .bearer_auth(&api.tokens["admin"])
            .header("content-type", "application/vnd.apache.parquet")
            .body(bytes)
            .send()
    };
    let response = send_parquet(parquet(&[
        ("1", "scans", "scans/1.nii", 10),
        ("2", "scans", "scans/1.nii", 10),
    ]))
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let answer: Value = response.json().await.unwrap();
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("line 3: duplicate location"), "{message}");
    let response = send_parquet(parquet(&[("1", "scans", "scans/1.nii", 10)]))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let response = upload("admin", "text/tab-separated-values; charset=utf-8", good)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["state"], "checking");
    assert_eq!(
        (accepted["files"].as_u64(), accepted["bytes"].as_u64()),
        (Some(1), Some(10))
    );
    let id = accepted["id"].as_str().unwrap();
    let (status, one) = api
        .call(
            "admin",
            Method::GET,
            &e(&format!("/inventory/files/{id}")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["id"], id);
    let (status, _) = api
        .call(
            "owner",
            Method::GET,
            &e(&format!("/inventory/files/{id}")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api
        .call("admin", Method::GET, &e("/inventory/files/nope"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    api.db.finish().await;
}
