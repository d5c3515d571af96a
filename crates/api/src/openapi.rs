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
    add_links(&mut paths);
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

/// Where an object made by a `POST` (or `PUT`) at the key path is used: the
/// paths under it whose next segment is a parameter, and these besides.
const ALSO_USED_AT: [(&str, &str); 1] = [("/v1/requests/{id}/projects", "/v1/projects/{id}")];

/// OpenAPI links from each operation that makes an object (it answers the
/// object, with its `id`) to the operations that take that id, so a client
/// (or a fuzzer's stateful phase) can chain them: `POST /v1/environments`
/// to `GET /v1/environments/{id}`, `POST /v1/requests` to
/// `POST /v1/requests/{id}/submit`, and so on. The other parameters of a
/// target are those of the making call's own path.
fn add_links(paths: &mut Map<String, Value>) {
    let targets: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flat_map(|ops| ops.keys())
                .map(move |method| (path.clone(), method.clone()))
        })
        .collect();
    let params = |path: &str| -> Vec<String> {
        path.split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect()
    };
    let makers: Vec<(String, String)> = targets
        .iter()
        .filter(|(_, method)| method == "post" || method == "put")
        .cloned()
        .collect();
    for (maker, method) in makers {
        let mut links = Map::new();
        for (target, target_method) in &targets {
            // the target's parameter that the made object's id fills
            let id_param = match target.strip_prefix(&format!("{maker}/{{")) {
                Some(rest) => rest.split('}').next().map(str::to_owned),
                None => ALSO_USED_AT
                    .iter()
                    .find(|(from, to)| *from == maker && to == target)
                    .map(|_| "id".to_owned()),
            };
            let Some(id_param) = id_param else { continue };
            let mut parameters = Map::new();
            for name in params(target) {
                let value = if name == id_param {
                    "$response.body#/id".to_owned()
                } else if params(&maker).contains(&name) {
                    format!("$request.path.{name}")
                } else {
                    continue;
                };
                parameters.insert(name, json!(value));
            }
            let name = format!(
                "{}{}",
                target_method,
                target.replace(['/', '{', '}'], "_").trim_end_matches('_')
            );
            links.insert(
                name,
                json!({"operationRef": format!("#/paths/{}/{target_method}", target.replace('~', "~0").replace('/', "~1")), "parameters": parameters}),
            );
        }
        if !links.is_empty()
            && let Some(responses) = paths[&maker][&method]["responses"].as_object_mut()
            && let Some(success) = responses.get_mut("2XX")
        {
            success["links"] = Value::Object(links);
        }
    }
}

/// Served as built once: the document cannot change while the process runs.
pub(crate) async fn document() -> Json<Value> {
    static SPEC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    Json(SPEC.get_or_init(spec).clone())
}
