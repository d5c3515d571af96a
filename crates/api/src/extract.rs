//! Extractors: the caller (bearer token) and JSON bodies whose every
//! problem is an [`ApiError`] naming the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use tre_app::Caller;
use tre_domain::Actor;

use crate::{ApiError, AppState, RequestId};

/// The authenticated caller, with the request id as trace id.
#[derive(Debug, Clone)]
pub struct Auth(pub Caller);

/// The bearer token of a request: `Authorization: Bearer TOKEN`, the scheme
/// in any case, spaces around the token ignored. The one parser of the
/// header, for the handlers and the middleware alike (a layer that read it
/// differently could let a call skip what the layer does).
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The caller a middleware layer already authenticated from this request's
/// bearer token.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated(pub(crate) Actor);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or_else(ApiError::unauthorized)?;
        let actor = match parts.extensions.get::<Authenticated>() {
            Some(known) => known.0.clone(),
            None => state
                .store()
                .authenticate(token)
                .await?
                .ok_or_else(ApiError::unauthorized)?,
        };
        let trace = parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        // a workspace's token reaches its own project's data, nothing else
        if let Some(project) = &actor.workspace_of {
            let own = format!("/v1/projects/{project}");
            let path = parts.uri.path();
            if path != own && !path.starts_with(&format!("{own}/objects")) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "a workspace's token reaches only its own project's data",
                ));
            }
        }
        // the idempotency layer's claim on this call's key: the store
        // claims it in the transaction of the work (see `idempotency`)
        let claim = parts
            .extensions
            .get::<tre_store::IdempotencyClaim>()
            .cloned();
        Ok(Self(Caller::new(actor, trace).with_idempotency(claim)))
    }
}

/// A JSON body: 415 without a JSON content type, 413 over the size limit,
/// 400 when it is not JSON, 422 naming the field when it does not fit.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        within_limit(req.headers(), crate::BODY_LIMIT)?;
        // read the body first, whatever we answer: a body left unread on a
        // kept-alive connection would be taken for the next request
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large(crate::BODY_LIMIT)
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.body_text())
            }
        })?;
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json",
            ));
        }
        parse(&bytes).map(Body)
    }
}

/// 413 at once, before a byte of the body is read, when the body's
/// announced length (`Content-Length`) is over `limit`. A body sent without
/// a length (chunked) is cut off at the limit as it is read.
pub(crate) fn within_limit(headers: &axum::http::HeaderMap, limit: usize) -> Result<(), ApiError> {
    let announced = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match announced {
        Some(length) if length > limit as u64 => Err(too_large(limit)),
        _ => Ok(()),
    }
}

/// A route's body limit, checked against the announced length from the
/// request's head: put it after the caller's guard and before the body.
#[derive(Debug)]
pub struct WithinLimit<const LIMIT: usize>;

impl<const LIMIT: usize, S: Send + Sync> FromRequestParts<S> for WithinLimit<LIMIT> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        within_limit(&parts.headers, LIMIT).map(|()| Self)
    }
}

/// The answer to a body over the limit.
pub(crate) fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the body is larger than the limit ({} MiB)", limit >> 20),
    )
}

/// Parses JSON, naming the path of a value that does not fit.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // malformed JSON is a 400 whatever its fields would have been; a key
    // given twice in one object is refused (422, naming it) in every body,
    // never read as "the last one wins"
    let mut checker = serde_json::Deserializer::from_slice(bytes);
    let checked =
        serde::de::DeserializeSeed::deserialize(NoDuplicateKeys(String::new()), &mut checker)
            .and_then(|()| checker.end());
    if let Err(e) = checked {
        if e.is_data() {
            let message = e.to_string();
            let field = message
                .split("duplicate key ")
                .nth(1)
                .and_then(|rest| rest.split(" at line").next())
                .unwrap_or("body")
                .to_owned();
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("{field} is given twice"),
            )
            .with_field(field));
        }
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            e.to_string(),
        ));
    }
    // every body of this API is a JSON object: the array form serde would
    // also take for a struct (`[null, null]`) is refused
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "the body must be a JSON object",
        )
        .with_field("body"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut typed = serde_path_to_error::deserialize::<_, T>(&mut de);
    // JSON Schema counts 3.0 as an integer (the document says `integer`),
    // serde does not: a number with a zero fraction is read as the integer
    // it is, on a second reading, so the usual body pays nothing for it
    if let Err(e) = &typed
        && e.inner()
            .to_string()
            .starts_with("invalid type: floating point")
        && let Some(integral) = integral_floats_as_integers(bytes)
    {
        let mut de = serde_json::Deserializer::from_slice(&integral);
        typed = serde_path_to_error::deserialize::<_, T>(&mut de);
    }
    match typed {
        Ok(value) => Ok(value),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // the syntax was checked above: whatever fails now is data that
            // does not fit (serde_json calls some of it "syntax"). A missing
            // field is reported at its parent, with its name in the message:
            // name the field itself.
            let message = inner.to_string();
            let missing = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next());
            let field = match (path.as_str(), missing) {
                (".", Some(name)) => name.to_owned(),
                (parent, Some(name)) => format!("{parent}.{name}"),
                (".", None) => "body".to_owned(),
                (_, None) => path,
            };
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                crate::serde_words::plain(&message),
            )
            .with_field(field))
        }
    }
}

/// The body again with every number that has a zero fraction and fits
/// (`3.0`, `-2e3`) written as an integer; none when there is none.
fn integral_floats_as_integers(bytes: &[u8]) -> Option<Vec<u8>> {
    fn walk(value: &mut serde_json::Value, changed: &mut bool) {
        match value {
            serde_json::Value::Number(n) if n.is_f64() => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                // within [-2^63, 2^64): exact as an i64 or a u64
                const LOWEST: f64 = -(2u64.pow(63) as f64);
                const PAST_HIGHEST: f64 = 2.0 * 2u64.pow(63) as f64;
                if f.fract() == 0.0 && (LOWEST..PAST_HIGHEST).contains(&f) {
                    *value = if f < 0.0 {
                        serde_json::Value::from(f as i64)
                    } else {
                        serde_json::Value::from(f as u64)
                    };
                    *changed = true;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| walk(v, changed)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| walk(v, changed)),
            _ => {}
        }
    }
    let mut value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let mut changed = false;
    walk(&mut value, &mut changed);
    changed.then(|| serde_json::to_vec(&value).expect("a JSON value serializes"))
}

/// Walks a JSON document without keeping it, refusing an object key that is
/// given twice; the error names its path (`cohort.and[1].field`).
struct NoDuplicateKeys(String);

impl<'de> serde::de::DeserializeSeed<'de> for NoDuplicateKeys {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeys {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(NoDuplicateKeys(format!("{}[{i}]", self.0)))?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.0.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.0)
            };
            if !seen.insert(key) {
                return Err(serde::de::Error::custom(format!("duplicate key {path}")));
            }
            map.next_value_seed(NoDuplicateKeys(path))?;
        }
        Ok(())
    }
}

/// Query parameters; a malformed query string is a 400 in the error shape.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| Params(q))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))
    }
}

/// The revision of the object a change is made on, when the caller names
/// one (`If-Match: "7"`, the `ETag` of what they read; `*` names none).
#[derive(Debug, Clone, Copy)]
pub struct IfMatch(pub Option<i64>);

fn if_match(parts: &Parts) -> Result<Option<i64>, ApiError> {
    let Some(value) = parts.headers.get(axum::http::header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    // an empty header names nothing, as none does
    if text == "*" || text.is_empty() {
        return Ok(None);
    }
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                "If-Match: give the ETag the object was read with, e.g. \"7\" (with the quotes)",
            )
            .with_field("If-Match")
        })
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        if_match(parts).map(Self)
    }
}

/// The revision a full replacement is made on: required, so that what one
/// admin sends cannot silently undo another's change made meanwhile.
/// (Checked in the handler, after the body: a body that is wrong says so
/// first.)
pub(crate) fn required(revision: Option<i64>) -> Result<i64, ApiError> {
    revision.ok_or_else(|| {
        ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition_required",
            "a full replacement needs If-Match with the ETag of what you read (GET the object first); to change some fields only, use PATCH",
        )
        .with_field("If-Match")
    })
}

/// `value` as JSON with its revision as `ETag`.
pub(crate) fn with_revision(
    value: impl serde::Serialize,
    revision: i64,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::ETAG, format!("\"{revision}\""))],
        axum::Json(value),
    )
        .into_response()
}
