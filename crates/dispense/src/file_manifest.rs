//! A file inventory kept in the environment's source, as a TSV or a
//! Parquet file (`.parquet`): what an admin registers instead of uploading
//! a large manifest. Parquet columns: `entity` (text or integer),
//! `collection`, `location` (text), `size` (integer) and optionally
//! `sha256` (text, null when absent). A Parquet row's "line" is its row
//! number plus one, as if a header were line 1.

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_schema::DataType;
use futures::TryStreamExt;
use tre_domain::files::{FileEntry, FileProblems, parse_tsv};

use crate::engine::{reader_builder, stream_columns};
use crate::{DispenseError, Source};

/// Most bytes of a TSV manifest read from a source (about ten million
/// rows); larger ones are registered as Parquet.
const MAX_TSV_BYTES: u64 = 2 << 30;

/// The rows of the manifest at `location` in `source`, with their lines;
/// rows that cannot be read are problems (by line), a manifest that cannot
/// be read at all an error.
pub async fn read(
    source: &Source,
    location: &str,
) -> Result<Result<Vec<(u64, FileEntry)>, FileProblems>, DispenseError> {
    if location.ends_with(".parquet") {
        return read_parquet(source, location).await;
    }
    let size = source.size(location).await?;
    if size > MAX_TSV_BYTES {
        let mut problems = FileProblems::default();
        problems.push(
            1,
            format!("{location}: a TSV manifest of more than 2 GiB; register it as Parquet"),
        );
        return Ok(Err(problems));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    let mut stream = source.stream(location, None).await?;
    while let Some(chunk) = stream.try_next().await? {
        bytes.extend_from_slice(&chunk);
    }
    Ok(match String::from_utf8(bytes) {
        Ok(text) => parse_tsv(&text),
        Err(e) => {
            let mut problems = FileProblems::default();
            problems.push(1, format!("{location} is not UTF-8 text: {e}"));
            Err(problems)
        }
    })
}

async fn read_parquet(
    source: &Source,
    location: &str,
) -> Result<Result<Vec<(u64, FileEntry)>, FileProblems>, DispenseError> {
    let builder = reader_builder(source, location).await?;
    let has_sha = builder.schema().field_with_name("sha256").is_ok();
    let mut columns = vec!["entity", "collection", "location", "size"];
    if has_sha {
        columns.push("sha256");
    }
    let mut problems = FileProblems::default();
    for name in &columns {
        if builder.schema().field_with_name(name).is_err() {
            problems.push(1, format!("the manifest has no column {name:?}"));
        }
    }
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    let mut stream = stream_columns(builder, &columns, location)?;
    let mut entries = Vec::new();
    let mut line = 1u64;
    while let Some(batch) = stream.try_next().await? {
        let text = |name: &str| -> Result<arrow_array::ArrayRef, DispenseError> {
            Ok(arrow_cast::cast(
                batch.column_by_name(name).expect("projected"),
                &DataType::Utf8,
            )?)
        };
        let (entity, collection, path) = (text("entity")?, text("collection")?, text("location")?);
        let sha = if has_sha { Some(text("sha256")?) } else { None };
        let size = arrow_cast::cast(
            batch.column_by_name("size").expect("projected"),
            &DataType::Int64,
        )?;
        let size = size.as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            line += 1;
            let cell = |column: &arrow_array::ArrayRef| -> Option<String> {
                let column = column.as_string::<i32>();
                column.is_valid(row).then(|| column.value(row).to_owned())
            };
            if !size.is_valid(row) || size.value(row) < 0 {
                problems.push(line, "size is missing or negative");
                continue;
            }
            entries.push((
                line,
                FileEntry {
                    entity: cell(&entity).unwrap_or_default(),
                    collection: cell(&collection).unwrap_or_default(),
                    location: cell(&path).unwrap_or_default(),
                    size: size.value(row) as u64,
                    sha256: sha
                        .as_ref()
                        .and_then(cell)
                        .map(|s| s.to_ascii_lowercase())
                        .filter(|s| !s.is_empty()),
                },
            ));
        }
    }
    Ok(if problems.is_empty() {
        Ok(entries)
    } else {
        Err(problems)
    })
}
