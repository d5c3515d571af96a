//! A file inventory as a Parquet file (uploaded, or kept in the
//! environment's source beside TSV ones: what an admin registers instead of
//! uploading a large manifest). Parquet columns: `entity` (text or integer),
//! `collection`, `location` (text), `size` (integer) and optionally
//! `sha256` (text, null when absent). A Parquet row's "line" is its row
//! number plus one, as if a header were line 1.

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_schema::DataType;
use bytes::Bytes;
use futures::TryStreamExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tre_domain::files::{FileEntry, FileProblems, parse_tsv};

use crate::{DispenseError, Source};

/// Most bytes of a manifest read from a source (about twenty million TSV
/// rows).
const MAX_BYTES: u64 = 2 << 30;

/// The rows of the manifest at `location` in `source`, with their lines;
/// rows that cannot be read are problems (by line), a manifest that cannot
/// be read at all an error.
pub async fn read(
    source: &Source,
    location: &str,
) -> Result<Result<Vec<(u64, FileEntry)>, FileProblems>, DispenseError> {
    let size = source.size(location).await?;
    if size > MAX_BYTES {
        let mut problems = FileProblems::default();
        problems.push(
            1,
            format!("{location}: a manifest of more than 2 GiB; split it by collection"),
        );
        return Ok(Err(problems));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    let mut stream = source.stream(location, None).await?;
    while let Some(chunk) = stream.try_next().await? {
        bytes.extend_from_slice(&chunk);
    }
    if location.ends_with(".parquet") {
        return parse_parquet(Bytes::from(bytes));
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

/// The rows of a Parquet manifest held in memory (an upload, or one read
/// from a source); rows that cannot be read are problems (by line).
pub fn parse_parquet(
    bytes: Bytes,
) -> Result<Result<Vec<(u64, FileEntry)>, FileProblems>, DispenseError> {
    let mut problems = FileProblems::default();
    let builder = match ParquetRecordBatchReaderBuilder::try_new(bytes) {
        Ok(builder) => builder,
        Err(e) => {
            problems.push(1, format!("not a Parquet file: {e}"));
            return Ok(Err(problems));
        }
    };
    let schema = builder.schema().clone();
    let has_sha = schema.field_with_name("sha256").is_ok();
    for name in ["entity", "collection", "location", "size"] {
        if schema.field_with_name(name).is_err() {
            problems.push(1, format!("the manifest has no column {name:?}"));
        }
    }
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    let mut entries = Vec::new();
    let mut line = 1u64;
    for batch in builder.with_batch_size(64 * 1024).build()? {
        let batch = batch?;
        let text = |name: &str| -> Result<arrow_array::ArrayRef, DispenseError> {
            Ok(arrow_cast::cast(
                batch.column_by_name(name).expect("checked"),
                &DataType::Utf8,
            )?)
        };
        let (entity, collection, path) = (text("entity")?, text("collection")?, text("location")?);
        let sha = if has_sha { Some(text("sha256")?) } else { None };
        let size = arrow_cast::cast(
            batch.column_by_name("size").expect("checked"),
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
