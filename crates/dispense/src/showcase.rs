//! The showcase's true aggregates, computed from the cohort dataset's
//! Parquet files: [`ShowcaseColumns`] holds the showcase columns of one
//! inventory version in memory with each participant's record key (for the
//! cell-key method), and counts them for everyone (the showcase job) or for
//! a cohort. Nothing here is released: `tre_domain::showcase::release` is.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_buffer::BooleanBuffer;
use arrow_schema::DataType;
use futures::TryStreamExt;
use hmac::{Hmac, KeyInit, Mac};
use parquet::arrow::ProjectionMask;
use sha2::Sha256;
use tre_domain::cohort::Expr;
use tre_domain::disclosure::Cell;
use tre_domain::showcase::{Distribution, FieldAggregate, ShowcaseAggregates, bin_of, nice_edges};
use tre_domain::{Dataset, FieldRef, FieldType, Inventory};

use crate::engine::{BATCH_ROWS, reader_builder, root_indices};
use crate::source::Source;
use crate::{DispenseError, filter};

/// Most categories a field shows by name; the rest are `other`.
pub const TOP_CATEGORIES: usize = 20;
/// About how many bins a numeric field gets between its 5th and 95th
/// percentiles (values outside fall in the open end bins).
pub const TARGET_BINS: usize = 10;

/// One showcase column, in the form it is counted in: compact, so a
/// version's columns for a million participants take tens of megabytes.
#[derive(Debug)]
enum Values {
    /// Numbers; dates as calendar years; NaN for missing.
    Numbers(Vec<f64>),
    /// Texts as codes into `names`; [`MISSING`] for missing.
    Text { codes: Vec<u32>, names: Vec<String> },
}

/// The code of a missing text.
const MISSING: u32 = u32::MAX;

/// The participants a cohort filter selects, as one bit per row.
#[derive(Debug, Clone)]
pub struct Selection {
    bits: BooleanBuffer,
}

impl Selection {
    /// How many participants are in it.
    pub fn len(&self) -> u64 {
        self.bits.count_set_bits() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many participants are in exactly one of the two (the symmetric
    /// difference); both must come from the same columns.
    pub fn difference(&self, other: &Selection) -> u64 {
        (&self.bits ^ &other.bits).count_set_bits() as u64
    }
}

/// The showcase columns of the cohort dataset of one inventory version.
#[derive(Debug)]
pub struct ShowcaseColumns {
    version: u32,
    dataset: Dataset,
    fields: Vec<(FieldRef, FieldType, Values)>,
    /// The columns a cohort filter may read, as Arrow arrays.
    batch: RecordBatch,
    record_keys: Vec<u32>,
}

/// How a field is binned: the full showcase's shape, reused for cohorts so
/// that their bins say nothing new about the edges.
#[derive(Debug, Clone)]
enum Shape {
    Histogram { edges: Vec<f64>, years: bool },
    Categories { names: Vec<String> },
}

impl ShowcaseColumns {
    /// Reads the cohort dataset's showcase fields (those the filter
    /// language can count: not `other`) and its keys; `secret` keys each
    /// participant's record key.
    pub async fn load(
        source: &Source,
        inventory: &Inventory,
        secret: &[u8],
    ) -> Result<Self, DispenseError> {
        let dataset = inventory
            .cohort()
            .ok_or_else(|| DispenseError::data("the inventory has no cohort dataset"))?
            .clone();
        let wanted: Vec<(FieldRef, FieldType)> = inventory
            .showcase
            .iter()
            .filter(|f| f.dataset == dataset.name && f.field != dataset.key)
            .filter_map(|f| {
                let field = dataset.field(&f.field)?;
                (field.field_type != FieldType::Other).then(|| (f.clone(), field.field_type))
            })
            .collect();
        let mut names: Vec<&str> = vec![dataset.key.as_str()];
        names.extend(wanted.iter().map(|(f, _)| f.field.as_str()));
        let mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        let mut batches = Vec::new();
        let mut record_keys = Vec::new();
        for path in &dataset.locations {
            let builder = reader_builder(source, path).await?;
            let indices = root_indices(builder.schema(), &names, path)?;
            let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
            let mut stream = builder
                .with_projection(mask)
                .with_batch_size(BATCH_ROWS)
                .build()?;
            while let Some(batch) = stream.try_next().await? {
                let keys = arrow_cast::cast(
                    batch.column_by_name(&dataset.key).expect("projected"),
                    &DataType::Utf8,
                )?;
                for key in keys.as_string::<i32>() {
                    record_keys.push(key.map_or(0, |k| record_key(&mac, k)));
                }
                batches.push(batch);
            }
        }
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => {
                return Err(DispenseError::data(format!(
                    "cohort dataset {:?} has no rows or no files",
                    dataset.name
                )));
            }
        };
        let batch = arrow_select::concat::concat_batches(&schema, &batches)?;
        drop(batches);
        // the key is never filtered on: only its record keys are kept
        let filterable: Vec<usize> = (0..schema.fields().len())
            .filter(|i| *schema.field(*i).name() != dataset.key)
            .collect();
        let batch = batch.project(&filterable)?;
        let fields = wanted
            .into_iter()
            .map(|(f, t)| {
                let column = batch.column_by_name(&f.field).expect("projected");
                let values = values_of(column, t)?;
                Ok((f, t, values))
            })
            .collect::<Result<Vec<_>, DispenseError>>()?;
        Ok(Self {
            version: inventory.version,
            dataset,
            fields,
            batch,
            record_keys,
        })
    }

    pub fn rows(&self) -> usize {
        self.record_keys.len()
    }

    /// The cohort dataset (its fields type the filter).
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// The loaded columns (for filters).
    pub fn batch(&self) -> &RecordBatch {
        &self.batch
    }

    /// Everyone's aggregates: bins from the data's own percentiles, the
    /// most frequent categories.
    pub fn aggregate_all(&self) -> ShowcaseAggregates {
        let mut participants = Cell::default();
        for key in &self.record_keys {
            participants.add(*key);
        }
        let fields = self
            .fields
            .iter()
            .map(|(field, field_type, values)| {
                let shape = shape_of(values, *field_type);
                self.count(field, *field_type, values, &shape, None)
            })
            .collect();
        ShowcaseAggregates {
            version: self.version,
            participants,
            fields,
        }
    }

    /// The participants `expr` selects (everyone for none); a row where
    /// the filter is unknown is not selected.
    pub fn select(&self, expr: Option<&Expr>) -> Result<Selection, DispenseError> {
        let bits = match expr {
            None => BooleanBuffer::new_set(self.rows()),
            Some(expr) => {
                let truth = filter::evaluate(expr, &self.batch, &self.dataset)?;
                match truth.nulls() {
                    Some(known) => truth.values() & known.inner(),
                    None => truth.values().clone(),
                }
            }
        };
        Ok(Selection { bits })
    }

    /// A cohort's size and the distributions of `fields` within it, binned
    /// as the full showcase `like` bins them (so a cohort's bins say nothing
    /// new about where values lie). Fields not in `like` are left out.
    pub fn aggregate_cohort(
        &self,
        selection: &Selection,
        like: &ShowcaseAggregates,
        fields: &[String],
    ) -> (Cell, Vec<FieldAggregate>) {
        let mut size = Cell::default();
        for row in selection.bits.set_indices() {
            size.add(self.record_keys[row]);
        }
        let aggregates = fields
            .iter()
            .filter_map(|name| {
                let (field, field_type, values) =
                    self.fields.iter().find(|(f, _, _)| f.field == *name)?;
                let full = like.fields.iter().find(|a| a.field == *field)?;
                let shape = match &full.distribution {
                    Distribution::Histogram { edges, years, .. } => Shape::Histogram {
                        edges: edges.clone(),
                        years: *years,
                    },
                    Distribution::Categories { categories, .. } => Shape::Categories {
                        names: categories.iter().map(|(n, _)| n.clone()).collect(),
                    },
                };
                Some(self.count(field, *field_type, values, &shape, Some(selection)))
            })
            .collect();
        (size, aggregates)
    }

    fn count(
        &self,
        field: &FieldRef,
        field_type: FieldType,
        values: &Values,
        shape: &Shape,
        selected: Option<&Selection>,
    ) -> FieldAggregate {
        let (mut present, mut missing) = (Cell::default(), Cell::default());
        let rows: Box<dyn Iterator<Item = usize> + '_> = match selected {
            Some(s) => Box::new(s.bits.set_indices()),
            None => Box::new(0..self.rows()),
        };
        let distribution = match (shape, values) {
            (Shape::Histogram { edges, years }, Values::Numbers(numbers)) => {
                let mut bins = vec![Cell::default(); edges.len() + 1];
                for row in rows {
                    let key = self.record_keys[row];
                    let value = numbers[row];
                    if value.is_nan() {
                        missing.add(key);
                    } else {
                        present.add(key);
                        bins[bin_of(value, edges)].add(key);
                    }
                }
                Distribution::Histogram {
                    edges: edges.clone(),
                    bins,
                    years: *years,
                }
            }
            (Shape::Categories { names }, Values::Text { codes, names: all }) => {
                // each code's cell: a shown category's, or other (None)
                let index: HashMap<&str, usize> = names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.as_str(), i))
                    .collect();
                let cell_of: Vec<Option<usize>> =
                    all.iter().map(|n| index.get(n.as_str()).copied()).collect();
                let mut cells = vec![Cell::default(); names.len()];
                let mut other = Cell::default();
                for row in rows {
                    let key = self.record_keys[row];
                    match codes[row] {
                        MISSING => missing.add(key),
                        code => {
                            present.add(key);
                            match cell_of[code as usize] {
                                Some(i) => cells[i].add(key),
                                None => other.add(key),
                            }
                        }
                    }
                }
                Distribution::Categories {
                    categories: names.iter().cloned().zip(cells).collect(),
                    other,
                }
            }
            _ => unreachable!("a shape is made from its own values"),
        };
        FieldAggregate {
            field: field.clone(),
            field_type,
            present,
            missing,
            distribution,
        }
    }
}

/// A participant's record key: the first four bytes of HMAC-SHA256 of the
/// entity key under the environment's secret.
fn record_key(mac: &Hmac<Sha256>, key: &str) -> u32 {
    let mut mac = mac.clone();
    mac.update(key.as_bytes());
    let digest = mac.finalize().into_bytes();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

fn values_of(column: &ArrayRef, field_type: FieldType) -> Result<Values, DispenseError> {
    Ok(match field_type {
        FieldType::Integer | FieldType::Float => {
            let numbers = arrow_cast::cast(column, &DataType::Float64)?;
            Values::Numbers(
                numbers
                    .as_primitive::<Float64Type>()
                    .iter()
                    .map(|v| v.unwrap_or(f64::NAN))
                    .collect(),
            )
        }
        FieldType::Date => {
            let days = arrow_cast::cast(column, &DataType::Date32)?;
            Values::Numbers(
                days.as_primitive::<Date32Type>()
                    .iter()
                    .map(|d| d.map_or(f64::NAN, |d| f64::from(year_of(d))))
                    .collect(),
            )
        }
        FieldType::String | FieldType::Boolean => {
            let texts = arrow_cast::cast(column, &DataType::Utf8)?;
            let mut names: Vec<String> = Vec::new();
            let mut index: HashMap<String, u32> = HashMap::new();
            let codes = texts
                .as_string::<i32>()
                .iter()
                .map(|t| match t {
                    None => MISSING,
                    Some(t) => match index.get(t) {
                        Some(code) => *code,
                        None => {
                            let code = u32::try_from(names.len()).unwrap_or(MISSING - 1);
                            names.push(t.to_owned());
                            index.insert(t.to_owned(), code);
                            code
                        }
                    },
                })
                .collect();
            Values::Text { codes, names }
        }
        FieldType::Other => unreachable!("other fields are not loaded"),
    })
}

/// The full showcase's shape of a field, from everyone's values.
fn shape_of(values: &Values, field_type: FieldType) -> Shape {
    match values {
        Values::Numbers(numbers) => {
            let mut sorted: Vec<f64> = numbers.iter().copied().filter(|v| !v.is_nan()).collect();
            sorted.sort_by(f64::total_cmp);
            let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
            let edges = if sorted.is_empty() {
                Vec::new()
            } else {
                nice_edges(
                    at(0.05),
                    at(0.95),
                    TARGET_BINS,
                    field_type != FieldType::Float,
                )
            };
            Shape::Histogram {
                edges,
                years: field_type == FieldType::Date,
            }
        }
        Values::Text { codes, names } => {
            let mut counts = vec![0u64; names.len()];
            for code in codes.iter().filter(|c| **c != MISSING) {
                counts[*code as usize] += 1;
            }
            let mut ranked: Vec<(&str, u64)> =
                names.iter().map(String::as_str).zip(counts).collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            Shape::Categories {
                names: ranked
                    .into_iter()
                    .take(TOP_CATEGORIES)
                    .map(|(n, _)| n.to_owned())
                    .collect(),
            }
        }
    }
}

/// The calendar year of a day count since 1970-01-01 (proleptic Gregorian;
/// H. Hinnant's civil_from_days).
pub fn year_of(days: i32) -> i32 {
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    i32::try_from(year).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn years_of_day_counts() {
        for (days, year) in [
            (0, 1970),
            (-1, 1969),
            (365, 1971),
            (-10_592, 1941), // 1941-01-01
            (-10_593, 1940), // 1940-12-31
            (11_016, 2000),  // 2000-02-29
            (19_722, 2023),  // 2023-12-31
        ] {
            assert_eq!(year_of(days), year, "{days}");
        }
    }
}
