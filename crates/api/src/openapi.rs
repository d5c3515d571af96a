//! `/openapi.json`: OpenAPI 3.1, built from the same endpoint table as the
//! router (see `routes::endpoints`); request bodies are the JSON Schemas of
//! the very types the handlers deserialize (schemars).

use axum::Json;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::routes::{Access, all_endpoints};

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
        // what every route of its shape can answer, then what it lists itself
        for (status, meaning) in common_errors(&e)
            .into_iter()
            .chain(e.errors.iter().copied())
        {
            operation["responses"][status.to_string()] = json!({
                "description": meaning,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            });
        }
        let mut params: Vec<Value> = path_params(e.path)
            .map(|name| {
                let mut schema = json!({"type": "string", "minLength": 1});
                if let Some(form) = e.path_forms.iter().find(|f| f.name == name) {
                    schema["pattern"] = json!(form.pattern);
                    if let Some(most) = form.max_length {
                        schema["maxLength"] = json!(most);
                    }
                }
                json!({"name": name, "in": "path", "required": true, "schema": schema})
            })
            .collect();
        if let Some(query) = e.query {
            let query = query(&mut generator);
            let required: Vec<&str> = query
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(properties) = query.get("properties").and_then(Value::as_object) {
                for (name, schema) in properties {
                    let mut schema = schema.clone();
                    // absent is how a query says "none": never `null`
                    without_null(&mut schema);
                    let description = schema.as_object_mut().and_then(|s| s.remove("description"));
                    let mut param = json!({"name": name, "in": "query", "required": required.contains(&name.as_str()), "schema": schema});
                    if let Some(description) = description {
                        param["description"] = description;
                    }
                    params.push(param);
                }
            }
        }
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
        if e.if_match != crate::routes::IfMatchUse::None {
            let mut params = operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            params.push(json!({
                "name": "If-Match",
                "in": "header",
                "required": e.if_match == crate::routes::IfMatchUse::Required,
                "description": "The ETag of the object as read (GET), e.g. \"7\": the change is refused (412) when the object changed since",
                "schema": {"type": "string", "pattern": "^\"[0-9]{1,18}\"$"}
            }));
            operation["parameters"] = Value::Array(params);
        }
        if e.access == Access::Public {
            operation["security"] = json!([]);
        }
        let entry = paths
            .entry(e.path.replace("{*", "{"))
            .or_insert_with(|| json!({}));
        entry[e.method.as_str().to_ascii_lowercase()] = operation;
    }
    add_links(&mut paths);
    let mut paths = Value::Object(paths);
    state_integer_ranges(&mut paths);
    let mut schemas = Value::Object(generator.take_definitions(true));
    state_integer_ranges(&mut schemas);
    let Value::Object(mut schemas) = schemas else {
        unreachable!("definitions are an object")
    };
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": ["string", "null"]},
                "problems": {"type": "array", "description": "every reason the object is not ready (`incomplete`), the first named by `field`", "items": {"type": "object", "required": ["field", "message"], "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}}},
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

/// The names of a path's parameters, in order; `{*path}` (the rest of the
/// path) is documented as `{path}`.
fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| name.trim_start_matches('*'))
}

/// The errors a route answers because of its shape: a token (401, 403,
/// 503 when the database is away), an id in its path (404), a body (400,
/// 413, 415, 422) or being a POST (an `Idempotency-Key` in use or reused).
/// A route's own list, given after, says more where it has more to say.
fn common_errors(e: &crate::routes::Endpoint) -> Vec<(u16, &'static str)> {
    let mut errors = Vec::new();
    if e.access == Access::BearerToken {
        errors.push((401, "unauthorized: no bearer token, or one that is unknown, expired, revoked or of a disabled user"));
        errors.push((403, "forbidden: the caller may not do this"));
        errors.push((
            503,
            "unavailable: the database does not answer; retry (Retry-After)",
        ));
    }
    if e.path.contains('{') {
        errors.push((
            404,
            "not found: no such object, or the caller may not know it exists",
        ));
    }
    if e.body.is_some() || e.tsv || e.query.is_some() {
        errors.push((
            422,
            "invalid: a field (named in `error.field`) does not hold",
        ));
    }
    if e.body.is_some() || e.tsv {
        errors.push((400, "malformed: the body is not JSON"));
        errors.push((413, "too large: the body is over the limit"));
        errors.push((415, "unsupported media type"));
    }
    if e.method != axum::http::Method::GET && e.access == Access::BearerToken {
        errors.push((409, "conflict: the object's state does not allow this, it is not ready (`incomplete`), or (POST) a call with this Idempotency-Key is still being answered"));
    }
    if e.method == axum::http::Method::POST && e.access == Access::BearerToken {
        errors.push((422, "invalid, or `idempotency_key_reused`: this Idempotency-Key was used for a different call"));
    }
    if e.if_match != crate::routes::IfMatchUse::None {
        errors.push((
            400,
            "malformed: the body is not JSON, or If-Match is not an ETag",
        ));
        errors.push((
            412,
            "stale: the object changed since the revision in If-Match; read it again",
        ));
    }
    if e.if_match == crate::routes::IfMatchUse::Required {
        errors.push((
            428,
            "precondition required: a full replacement needs If-Match (or use PATCH)",
        ));
    }
    errors
}

/// A query parameter's schema without `null`, which a query cannot send
/// (`?state=null` is the text "null").
fn without_null(schema: &mut Value) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(types)) = map.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types[0].clone();
            map.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(values)) = map.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(options)) = map.get_mut(key) {
            options.retain(|o| {
                o.get("type") != Some(&json!("null")) && o.get("const") != Some(&Value::Null)
            });
            if options.len() == 1 {
                let only = options.remove(0);
                map.remove(key);
                if let Value::Object(only) = only {
                    map.extend(only);
                }
            }
        }
    }
}

/// States the range of every integer the server reads into a fixed-width
/// type (schemars gives its `format`, and only the lower bound of unsigned
/// ones), so that a value the server would refuse is not documented as
/// valid.
fn state_integer_ranges(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let range: Option<(i128, i128)> = match map.get("format").and_then(Value::as_str) {
                Some("uint8") => Some((0, u8::MAX.into())),
                Some("uint16") => Some((0, u16::MAX.into())),
                Some("uint32") => Some((0, u32::MAX.into())),
                Some("uint64" | "uint") => Some((0, u64::MAX.into())),
                Some("int8") => Some((i8::MIN.into(), i8::MAX.into())),
                Some("int16") => Some((i16::MIN.into(), i16::MAX.into())),
                Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
                Some("int64" | "int") => Some((i64::MIN.into(), i64::MAX.into())),
                _ => None,
            };
            if let Some((min, max)) = range {
                let bound = |n: i128| -> Value {
                    u64::try_from(n).map_or_else(|_| json!(n as i64), |u| json!(u))
                };
                map.entry("minimum").or_insert_with(|| bound(min));
                map.entry("maximum").or_insert_with(|| bound(max));
            }
            map.values_mut().for_each(state_integer_ranges);
        }
        Value::Array(items) => items.iter_mut().for_each(state_integer_ranges),
        _ => {}
    }
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
    let params = |path: &str| -> Vec<String> { path_params(path).map(str::to_owned).collect() };
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
