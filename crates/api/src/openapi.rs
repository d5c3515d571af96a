//! `/openapi.json`: OpenAPI 3.1, built from the same endpoint table as the
//! router (see `routes::endpoints`); request bodies are the JSON Schemas of
//! the very types the handlers deserialize (schemars).

use axum::Json;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::routes::all_endpoints;

/// The document.
pub fn spec() -> Value {
    // bodies as JSON Schema 2020-12 (OpenAPI 3.1's dialect), as they are
    // deserialized, with shared definitions under components
    let mut generator = SchemaSettings::draft2020_12()
        .for_deserialize()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let mut paths: Map<String, Value> = Map::new();
    for e in all_endpoints() {
        let success = match e.response {
            Some(schema) => json!(schema(&mut generator)),
            None => json!({"type": "object"}),
        };
        let success_content = if e.svg {
            json!({"image/svg+xml": {"schema": {"type": "string"}}})
        } else if e.text {
            json!({"text/plain": {"schema": {"type": "string"}}})
        } else {
            json!({"application/json": {"schema": success}})
        };
        let mut operation = json!({
            "summary": e.summary,
            "responses": {
                "2XX": {"description": "success", "content": success_content},
                "default": {"description": "an error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        for (status, meaning) in e.errors {
            operation["responses"][status.to_string()] = json!({
                "description": meaning,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            });
        }
        let params: Vec<Value> = e
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            operation["parameters"] = Value::Array(params);
        }
        if e.tsv || e.body.is_some() {
            let mut content = Map::new();
            if e.tsv {
                content.insert(
                    "text/tab-separated-values".into(),
                    json!({"schema": {"type": "string"}}),
                );
                content.insert(
                    "application/vnd.apache.parquet".into(),
                    json!({"schema": {"type": "string", "format": "binary"}}),
                );
            }
            if let Some(body) = e.body {
                content.insert(
                    "application/json".into(),
                    json!({"schema": body(&mut generator)}),
                );
            }
            operation["requestBody"] = json!({"required": true, "content": content});
        }
        if e.method == axum::http::Method::POST {
            let params = operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut params = params;
            params.push(json!({"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}}));
            operation["parameters"] = Value::Array(params);
        }
        if !e.auth {
            operation["security"] = json!([]);
        }
        let entry = paths.entry(e.path.to_owned()).or_insert_with(|| json!({}));
        entry[e.method.as_str().to_ascii_lowercase()] = operation;
    }
    let mut schemas = generator.take_definitions(true);
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": ["string", "null"]}},
        }}}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {"title": "tre", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Trusted Research Environment API. Every error is the Error schema."},
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "paths": paths,
    })
}

/// Served as built once: the document cannot change while the process runs.
pub(crate) async fn document() -> Json<Value> {
    static SPEC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    Json(SPEC.get_or_init(spec).clone())
}
