//! Aggregates (environments, requests, projects) are stored as JSON
//! documents beside a `version` for optimistic concurrency.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{Executor, Row};

use crate::StoreError;

pub(crate) fn decode<T: DeserializeOwned>(
    object: &'static str,
    id: &str,
    doc: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt {
        object,
        id: id.to_owned(),
        message: e.to_string(),
    })
}

pub(crate) fn encode<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("aggregates serialize")
}

/// Loads one document and its version; `sql` selects `doc, version` by id.
pub(crate) async fn load<'e, T, E>(
    executor: E,
    sql: &'static str,
    object: &'static str,
    id: &str,
) -> Result<(T, i64), StoreError>
where
    T: DeserializeOwned,
    E: Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query(sql)
        .bind(id)
        .fetch_optional(executor)
        .await?
        .ok_or_else(|| StoreError::not_found(object, id))?;
    let doc: String = row.try_get(0)?;
    Ok((decode(object, id, &doc)?, row.try_get(1)?))
}
