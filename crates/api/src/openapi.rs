//! `/openapi.json`: OpenAPI 3.1, built from the same endpoint table as the
//! router (see `routes::endpoints`).

use axum::Json;
use serde_json::{Map, Value, json};

use crate::routes::endpoints;

/// The document.
pub fn spec() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for e in endpoints() {
        let mut operation = json!({
            "summary": e.summary,
            "responses": {
                "2XX": {"description": "success", "content": {"application/json": {"schema": {"type": "object"}}}},
                "default": {"description": "an error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        let params: Vec<Value> = e
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            operation["parameters"] = Value::Array(params);
        }
        if let Some(body) = e.body {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": {"type": "object", "title": body}}},
            });
        }
        if e.method == axum::http::Method::POST {
            let params = operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut params = params;
            params.push(json!({"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 255}}));
            operation["parameters"] = Value::Array(params);
        }
        if !e.auth {
            operation["security"] = json!([]);
        }
        let entry = paths.entry(e.path.to_owned()).or_insert_with(|| json!({}));
        entry[e.method.as_str().to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "tre", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Trusted Research Environment API. Every error is the Error schema."},
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": ["string", "null"]}},
            }}}},
        },
        "paths": paths,
    })
}

pub(crate) async fn document() -> Json<Value> {
    Json(spec())
}
