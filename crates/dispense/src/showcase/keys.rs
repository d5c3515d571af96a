//! Record keys for the cell-key method: each participant's secret 32-bit
//! key (a keyed hash of the entity key), and the cells of a cohort and of
//! the rows a dataset holds for it (the selection summary).

use std::fmt::Write;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_schema::DataType;
use futures::TryStreamExt;
use siphasher::sip::SipHasher13;
use tre_domain::Dataset;
use tre_domain::disclosure::Cell;

use crate::DispenseError;
use crate::engine::{reader_builder, stream_columns};
use crate::source::Source;

/// The keyed hash of record keys: SipHash-1-3 under the first 16 bytes of
/// the environment's secret (a keyed pseudo-random function; a participant's
/// record key cannot be computed without the secret).
pub fn record_hasher(secret: &[u8]) -> SipHasher13 {
    let mut key = [0u8; 16];
    for (k, s) in key.iter_mut().zip(secret) {
        *k = *s;
    }
    SipHasher13::new_with_key(&key)
}

/// The cohort's cell: its participants, keyed with the environment's
/// `secret` (for the selection summary).
pub fn cohort_cell(keys: &crate::CohortKeys, secret: &[u8]) -> Cell {
    let hasher = record_hasher(secret);
    let mut cell = Cell::default();
    match keys {
        crate::CohortKeys::Int(v) => {
            let mut text = String::with_capacity(20);
            for k in v {
                cell.add(int_record_key(&hasher, *k, &mut text));
            }
        }
        crate::CohortKeys::Text(v) => {
            for k in v {
                cell.add(record_key(&hasher, k));
            }
        }
    }
    cell
}

/// The rows of `dataset` whose participant is in the cohort, as one cell
/// (each row keyed by its participant's record key): what dispensing the
/// dataset for the cohort would write. Reads the key column only.
pub async fn cohort_rows(
    source: &Source,
    dataset: &Dataset,
    membership: &crate::Membership,
    secret: &[u8],
) -> Result<Cell, DispenseError> {
    let hasher = record_hasher(secret);
    let mut cell = Cell::default();
    for path in &dataset.locations {
        let builder = reader_builder(source, path).await?;
        let mut stream = stream_columns(builder, &[dataset.key.as_str()], path)?;
        while let Some(batch) = stream.try_next().await? {
            let keys = batch.column(0);
            let inside = membership.mask(keys)?;
            let texts = arrow_cast::cast(keys, &DataType::Utf8)?;
            let texts = texts.as_string::<i32>();
            for row in inside.values().set_indices() {
                cell.add(record_key(&hasher, texts.value(row)));
            }
        }
    }
    Ok(cell)
}

/// The cohort's bulk files of each of `collections` as one cell per
/// collection (each file keyed by its participant's record key) and their
/// bytes: what dispensing them would copy.
pub fn cohort_files(
    collections: &[String],
    files: &[tre_domain::files::FileEntry],
    membership: &crate::Membership,
    secret: &[u8],
) -> Vec<(String, Cell, u64)> {
    let hasher = record_hasher(secret);
    let mut out: Vec<(String, Cell, u64)> = collections
        .iter()
        .map(|c| (c.clone(), Cell::default(), 0))
        .collect();
    for file in files {
        let Some(key) = membership.key_of(&file.entity) else {
            continue;
        };
        if let Some((_, cell, bytes)) = out.iter_mut().find(|(c, _, _)| *c == file.collection) {
            cell.add(record_key(&hasher, &key));
            *bytes += file.size;
        }
    }
    out
}

/// [`record_key`] of an integer key, written out as text in `text` (a
/// buffer reused from key to key).
fn int_record_key(hasher: &SipHasher13, key: i64, text: &mut String) -> u32 {
    text.clear();
    let _ = write!(text, "{key}");
    record_key(hasher, text)
}

/// A participant's record key: the low 32 bits of the keyed hash of the
/// entity key's text.
pub fn record_key(hasher: &SipHasher13, key: &str) -> u32 {
    (hasher.hash(key.as_bytes()) & 0xffff_ffff) as u32
}

/// Every row's record key, batch by batch on every core.
pub(super) fn record_keys_of(
    batches: &[RecordBatch],
    key: &str,
    secret: &[u8],
) -> Result<Vec<u32>, DispenseError> {
    let hasher = record_hasher(secret);
    let keys_of = |batch: &RecordBatch| -> Result<Vec<u32>, DispenseError> {
        let keys = batch.column_by_name(key).expect("projected");
        Ok(match keys.as_primitive_opt::<Int64Type>() {
            // integer keys are written out as text without a text column
            Some(numbers) => {
                let mut text = String::with_capacity(20);
                numbers
                    .iter()
                    .map(|k| k.map_or(0, |k| int_record_key(&hasher, k, &mut text)))
                    .collect()
            }
            None => {
                let texts = arrow_cast::cast(keys, &DataType::Utf8)?;
                texts
                    .as_string::<i32>()
                    .iter()
                    .map(|k| k.map_or(0, |k| record_key(&hasher, k)))
                    .collect()
            }
        })
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = batches.len().div_ceil(threads).max(1);
    let parts: Vec<Vec<u32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = batches
            .chunks(chunk)
            .map(|some| {
                scope.spawn(move || -> Result<Vec<u32>, DispenseError> {
                    let mut out = Vec::new();
                    for batch in some {
                        out.extend(keys_of(batch)?);
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a hashing thread"))
            .collect::<Result<_, _>>()
    })?;
    Ok(parts.concat())
}
