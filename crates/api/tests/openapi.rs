//! `/openapi.json` against the server: every operation documented and
//! routed, and real bodies and answers checked against the schemas it
//! states (an external fuzzer checks the same from outside:
//! `scripts/api-conformance`).

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::*;
use tre_testkit::UseCases;

/// `/openapi.json` documents every operation, each documented operation is
/// routed, and what is not routed answers in the one error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_matches_the_routes() {
    let api = Api::start().await;
    let spec = api.ok("nobody", Method::GET, "/openapi.json", None).await;
    assert_eq!(spec["openapi"], "3.1.0");
    assert_eq!(spec, tre_api::openapi(), "served as built");
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            assert!(
                operation["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path}"
            );
            let concrete = path.replace("{id}", "no-such-id");
            let method: Method = method.to_uppercase().parse().unwrap();
            let (status, body) = api
                .call("owner", method.clone(), &concrete, Some(json!({})))
                .await;
            let unrouted =
                status == StatusCode::NOT_FOUND && body["error"]["message"] == "route not found";
            assert!(!unrouted, "{method} {path} is documented but not routed");
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        }
    }
    assert!(operations >= 33, "{operations}");
    // every body is a JSON Schema in components, as the handler reads it
    let schemas = spec["components"]["schemas"].as_object().unwrap();
    let resolve = |schema: &Value| -> Value {
        match schema["$ref"].as_str() {
            Some(r) => {
                let name = r.strip_prefix("#/components/schemas/").expect(r);
                schemas
                    .get(name)
                    .unwrap_or_else(|| panic!("{r} undefined"))
                    .clone()
            }
            None => schema.clone(),
        }
    };
    let mut bodies = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(body) = operation.get("requestBody") else {
                continue;
            };
            bodies += 1;
            if let Some(text) = body["content"].get("text/tab-separated-values") {
                assert_eq!(text["schema"]["type"], "string", "{method} {path}");
                continue;
            }
            let schema = resolve(&body["content"]["application/json"]["schema"]);
            assert_eq!(schema["type"], "object", "{method} {path}: {schema}");
            assert!(
                schema["properties"]
                    .as_object()
                    .is_some_and(|p| !p.is_empty()),
                "{method} {path}: {schema}"
            );
        }
    }
    assert!(bodies >= 13, "{bodies}");
    // links chain what a create answers to the operations that take its id
    let links = &spec["paths"]["/v1/requests"]["post"]["responses"]["2XX"]["links"];
    let submit = &links["post_v1_requests__id__submit"];
    assert_eq!(
        submit["operationRef"], "#/paths/~1v1~1requests~1{id}~1submit/post",
        "{links}"
    );
    assert_eq!(submit["parameters"]["id"], "$response.body#/id");
    let files =
        &spec["paths"]["/v1/environments/{id}/inventory/files"]["put"]["responses"]["2XX"]["links"];
    let one = &files["get_v1_environments__id__inventory_files__file_inventory"];
    assert_eq!(
        one["parameters"]["file_inventory"], "$response.body#/id",
        "{files}"
    );
    assert_eq!(one["parameters"]["id"], "$request.path.id");
    let projects =
        &spec["paths"]["/v1/requests/{id}/projects"]["post"]["responses"]["2XX"]["links"];
    assert!(projects["get_v1_projects__id"].is_object(), "{projects}");
    // every reference anywhere resolves
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&spec, &mut all);
    for r in &all {
        resolve(&json!({"$ref": r}));
    }
    // what clients rely on, spelled out
    let create = &schemas["CreateRequestBody"];
    let required: Vec<&str> = create["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        required.contains(&"environment_id") && required.contains(&"title"),
        "{create}"
    );
    assert!(
        create["properties"]["cohort"]
            .to_string()
            .contains("#/components/schemas/CohortFilter")
    );
    let filter = &schemas["CohortFilter"];
    assert_eq!(filter["oneOf"].as_array().unwrap().len(), 7, "{filter}");
    assert!(
        filter
            .to_string()
            .contains("#/components/schemas/CohortFilter"),
        "recursive"
    );
    let verdict = resolve(&schemas["DecisionBody"]["properties"]["decision"]);
    assert!(
        verdict.to_string().contains("approve") && verdict.to_string().contains("return"),
        "{verdict}"
    );
    assert_eq!(
        schemas["Inventory"]["additionalProperties"], false,
        "unknown fields are refused"
    );
    // what is not routed answers in the error shape
    let (status, body) = api
        .call("owner", Method::DELETE, "/v1/environments", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
    let (status, body) = api.call("owner", Method::GET, "/v2/anything", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    api.db.finish().await;
}

/// A small JSON Schema checker (the keywords schemars emits): `$ref`,
/// `type`, `const`, `enum`, `properties`, `required`,
/// `additionalProperties: false`, `items`, `oneOf`, `anyOf`, `allOf`.
fn conforms(schema: &Value, value: &Value, spec: &Value, path: &str) -> Result<(), String> {
    if schema == &Value::Bool(true) {
        return Ok(());
    }
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        let target = &spec["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("{path}: {r} undefined"));
        }
        return conforms(target, value, spec, path);
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let is = |t: &str| match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    };
    if !types.is_empty() && !types.iter().any(|t| is(t)) {
        return Err(format!("{path}: {value} is not {types:?}"));
    }
    if let Some(c) = schema.get("const")
        && c != value
    {
        return Err(format!("{path}: {value} is not {c}"));
    }
    if let Some(Value::Array(options)) = schema.get("enum")
        && !options.contains(value)
    {
        return Err(format!("{path}: {value} is not one of {options:?}"));
    }
    if let (Some(props), Value::Object(fields)) = (schema["properties"].as_object(), value) {
        for (key, sub) in props {
            if let Some(v) = fields.get(key) {
                conforms(sub, v, spec, &format!("{path}.{key}"))?;
            }
        }
        for key in schema["required"].as_array().into_iter().flatten() {
            let key = key.as_str().unwrap_or_default();
            if !fields.contains_key(key) {
                return Err(format!("{path}: {key} is required"));
            }
        }
        if schema["additionalProperties"] == false
            && let Some(extra) = fields.keys().find(|k| !props.contains_key(*k))
        {
            return Err(format!("{path}: {extra} is not allowed"));
        }
    }
    if let (Some(items), Value::Array(values)) = (schema.get("items"), value) {
        for (i, v) in values.iter().enumerate() {
            conforms(items, v, spec, &format!("{path}[{i}]"))?;
        }
    }
    for all in schema["allOf"].as_array().into_iter().flatten() {
        conforms(all, value, spec, path)?;
    }
    if let Some(any) = schema["anyOf"].as_array()
        && !any.iter().any(|s| conforms(s, value, spec, path).is_ok())
    {
        return Err(format!("{path}: {value} matches no anyOf branch"));
    }
    if let Some(one) = schema["oneOf"].as_array() {
        let matching = one
            .iter()
            .filter(|s| conforms(s, value, spec, path).is_ok())
            .count();
        if matching != 1 {
            return Err(format!("{path}: {value} matches {matching} oneOf branches"));
        }
    }
    Ok(())
}

/// What `/openapi.json` says of an operation's body (`"body"`) or its
/// success answer (anything else).
fn documented(spec: &Value, method: &Method, template: &str, part: &str) -> Value {
    let op = &spec["paths"][template][method.as_str().to_lowercase()];
    let schema = match part {
        "body" => &op["requestBody"]["content"]["application/json"]["schema"],
        _ => &op["responses"]["2XX"]["content"]["application/json"]["schema"],
    };
    assert!(
        schema.is_object(),
        "{method} {template}: {part} undocumented"
    );
    schema.clone()
}

/// Calls `path` (an instance of `template`) and checks the answer against
/// the document; returns the answer.
async fn documented_call(
    api: &Api,
    spec: &Value,
    who: &str,
    method: Method,
    template: &str,
    path: &str,
    body: Option<Value>,
) -> Value {
    if let Some(body) = &body {
        let schema = documented(spec, &method, template, "body");
        if let Err(e) = conforms(&schema, body, spec, "body") {
            panic!("{method} {template} body: {e}\n{body}");
        }
    }
    let answer = api.ok(who, method.clone(), path, body).await;
    let schema = documented(spec, &method, template, "answer");
    if let Err(e) = conforms(&schema, &answer, spec, "answer") {
        panic!("{method} {template} answer: {e}\n{answer}");
    }
    answer
}

/// Real bodies and real answers against what `/openapi.json` says of them,
/// and wrong ones refused by the same check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_schemas_match_real_traffic() {
    let api = Api::start().await;
    let spec = tre_api::openapi();
    let refused = |method: Method, template: &str, part: &str, value: Value| {
        let schema = documented(&spec, &method, template, part);
        assert!(
            conforms(&schema, &value, &spec, "x").is_err(),
            "{method} {template} {part} took {value}"
        );
    };
    refused(
        Method::POST,
        "/v1/requests",
        "body",
        json!({"title": "no environment"}),
    );
    refused(
        Method::POST,
        "/v1/requests",
        "body",
        json!({"environment_id": "e", "title": "t", "cohort": {"nand": []}}),
    );
    let env = published(&api).await;
    let path = format!("/v1/environments/{env}");
    let environment = documented_call(
        &api,
        &spec,
        "admin",
        Method::GET,
        "/v1/environments/{id}",
        &path,
        None,
    )
    .await;
    for (field, wrong) in [("state", json!("bogus")), ("admins", json!("admin"))] {
        let mut value = environment.clone();
        value[field] = wrong;
        refused(Method::GET, "/v1/environments/{id}", "answer", value);
    }
    documented_call(
        &api,
        &spec,
        "owner",
        Method::GET,
        "/v1/environments",
        "/v1/environments",
        None,
    )
    .await;
    let created = documented_call(
        &api,
        &spec,
        "owner",
        Method::POST,
        "/v1/requests",
        "/v1/requests",
        Some(request_body(&env)),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let submitted = documented_call(
        &api,
        &spec,
        "owner",
        Method::POST,
        "/v1/requests/{id}/submit",
        &format!("/v1/requests/{id}/submit"),
        None,
    )
    .await;
    assert_eq!(submitted["state"], "checking");
    let mut value = submitted.clone();
    value["state"] = json!("in_review_forever");
    refused(Method::POST, "/v1/requests/{id}/submit", "answer", value);
    let mut value = submitted.clone();
    value.as_object_mut().unwrap().remove("owner");
    refused(Method::POST, "/v1/requests/{id}/submit", "answer", value);
    // the count job's outcome (no dispensing worker here), then the
    // request as reviewers see it: with its resolved selection
    api.db
        .store
        .app()
        .record_cohort_count(
            &tre_testkit::System::new("test"),
            &tre_domain::RequestId(id.to_owned()),
            1,
            tre_domain::CohortCount::Counted(100),
        )
        .await
        .unwrap();
    let reviewed = documented_call(
        &api,
        &spec,
        "rev1",
        Method::GET,
        "/v1/requests/{id}",
        &format!("/v1/requests/{id}"),
        None,
    )
    .await;
    assert_eq!(reviewed["state"], "in_review");
    assert_eq!(reviewed["cohort_size"], 100);
    assert_eq!(
        reviewed["selection"]["collections"][0]["name"],
        "demographics"
    );
    documented_call(
        &api,
        &spec,
        "owner",
        Method::GET,
        "/v1/requests",
        "/v1/requests?role=owner",
        None,
    )
    .await;
    documented_call(
        &api,
        &spec,
        "rev1",
        Method::GET,
        "/v1/reviews",
        "/v1/reviews",
        None,
    )
    .await;
    let decided = documented_call(
        &api,
        &spec,
        "rev1",
        Method::POST,
        "/v1/requests/{id}/decisions",
        &format!("/v1/requests/{id}/decisions"),
        Some(json!({"stage": 0, "decision": "approve", "comment": "fine"})),
    )
    .await;
    assert_eq!(decided["id"], created["id"]);
    let history = documented_call(
        &api,
        &spec,
        "owner",
        Method::GET,
        "/v1/requests/{id}/history",
        &format!("/v1/requests/{id}/history"),
        None,
    )
    .await;
    assert!(history["items"].as_array().unwrap().len() >= 3, "{history}");
    let decisions = documented_call(
        &api,
        &spec,
        "owner",
        Method::GET,
        "/v1/requests/{id}/decisions",
        &format!("/v1/requests/{id}/decisions"),
        None,
    )
    .await;
    assert_eq!(decisions["items"][0]["decision"], "approve");
    for reviewer in ["rev2a", "rev2b"] {
        api.ok(
            reviewer,
            Method::POST,
            &format!("/v1/requests/{id}/decisions"),
            Some(json!({"stage": 1, "decision": "approve", "comment": ""})),
        )
        .await;
    }
    let project = documented_call(
        &api,
        &spec,
        "owner",
        Method::POST,
        "/v1/requests/{id}/projects",
        &format!("/v1/requests/{id}/projects"),
        None,
    )
    .await;
    let pid = project["id"].as_str().unwrap();
    let view = documented_call(
        &api,
        &spec,
        "owner",
        Method::GET,
        "/v1/projects/{id}",
        &format!("/v1/projects/{pid}"),
        None,
    )
    .await;
    assert_eq!(view["id"], project["id"]);
    assert!(view["progress"]["units_total"].is_u64(), "{view}");
    refused(
        Method::GET,
        "/v1/projects/{id}",
        "answer",
        json!({"id": pid, "progress": {"units_done": "many"}}),
    );
    let audit = documented_call(
        &api,
        &spec,
        "admin",
        Method::GET,
        "/v1/audit",
        &format!("/v1/audit?environment={env}"),
        None,
    )
    .await;
    assert!(!audit["items"].as_array().unwrap().is_empty());
    documented_call(
        &api,
        &spec,
        "rev1",
        Method::GET,
        "/v1/notifications",
        "/v1/notifications",
        None,
    )
    .await;
    api.db.finish().await;
}
