//! Extractors: the caller (bearer token) and JSON bodies whose every
//! problem is an [`ApiError`] naming the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use tre_domain::Actor;
use tre_store::Caller;

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
                .store
                .authenticate(token)
                .await?
                .ok_or_else(ApiError::unauthorized)?,
        };
        let trace = parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        Ok(Self(Caller::new(actor, trace)))
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
        // read the body first, whatever we answer: a body left unread on a
        // kept-alive connection would be taken for the next request
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "the body is larger than the limit",
                )
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
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
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
            Err(
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
                    .with_field(field),
            )
        }
    }
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
