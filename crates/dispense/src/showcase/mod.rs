//! The showcase's true aggregates, computed from the cohort dataset's
//! Parquet files: [`ShowcaseColumns`] holds the showcase columns of one
//! inventory version in memory with each participant's record key (for the
//! cell-key method), and counts them for everyone (the showcase job) or for
//! a cohort. Nothing here is released: `tre_domain::showcase::release` is.

mod gate;
mod keys;
mod select;

pub use gate::{Members, SKETCH_BUCKETS, first_conflict, first_conflict_between, sketch_distance};
pub use keys::{cohort_cell, cohort_files, cohort_rows, record_hasher, record_key};
pub use select::Selection;

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float64Type, Int32Type};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::DataType;
use futures::TryStreamExt;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use tre_domain::disclosure::Cell;
use tre_domain::showcase::{Distribution, FieldAggregate, ShowcaseAggregates, bin_of, nice_edges};
use tre_domain::{Dataset, FieldRef, FieldType, Inventory};

use crate::DispenseError;
use crate::engine::{reader_builder, stream_columns};
use crate::source::Source;
use keys::record_keys_of;
use select::Postings;

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

/// The showcase columns of the cohort dataset of one inventory version.
#[derive(Debug)]
pub struct ShowcaseColumns {
    version: u32,
    dataset: Dataset,
    fields: Vec<(FieldRef, FieldType, Values)>,
    /// The columns a cohort filter may read, as Arrow arrays.
    batch: RecordBatch,
    record_keys: Vec<u32>,
    /// The custodian's bin edges, by field name.
    bins: HashMap<String, Vec<f64>>,
    /// Per text field, its rows grouped by value: `field = text` is read
    /// from here without a scan. Made by the first query (the showcase job
    /// never needs them).
    postings: std::sync::OnceLock<HashMap<String, Postings>>,
    /// What the showcase released of this version, as sets (see
    /// [`ShowcaseColumns::public_sets`]), for the rules it was made for.
    public: std::sync::Mutex<
        Option<(
            tre_domain::disclosure::DisclosureRules,
            std::sync::Arc<Vec<Selection>>,
        )>,
    >,
}

/// How a field is binned: the full showcase's shape, reused for cohorts so
/// that their bins say nothing new about the edges.
#[derive(Debug, Clone)]
enum Shape {
    Histogram { edges: Vec<f64>, years: bool },
    Categories { names: Vec<String> },
}

impl Shape {
    /// The shape of a field as the full showcase (`full`) counts it.
    fn like(full: &FieldAggregate) -> Self {
        match &full.distribution {
            Distribution::Histogram { edges, years, .. } => Self::Histogram {
                edges: edges.clone(),
                years: *years,
            },
            Distribution::Categories { categories, .. } => Self::Categories {
                names: categories.iter().map(|(n, _)| n.clone()).collect(),
            },
        }
    }
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
        let mut batches = Vec::new();
        for path in &dataset.locations {
            let builder = reader_builder(source, path).await?;
            // texts are read as dictionaries, as Parquet usually stores
            // them: no text is materialised or hashed again
            let hint: Vec<arrow_schema::Field> = builder
                .schema()
                .fields()
                .iter()
                .map(|f| {
                    let text = matches!(f.data_type(), DataType::Utf8)
                        && dataset.field(f.name()).map(|d| d.field_type) == Some(FieldType::String);
                    if text {
                        arrow_schema::Field::new(
                            f.name(),
                            DataType::Dictionary(
                                Box::new(DataType::Int32),
                                Box::new(DataType::Utf8),
                            ),
                            f.is_nullable(),
                        )
                    } else {
                        f.as_ref().clone()
                    }
                })
                .collect();
            let metadata = ArrowReaderMetadata::try_new(
                builder.metadata().clone(),
                ArrowReaderOptions::new()
                    .with_schema(std::sync::Arc::new(arrow_schema::Schema::new(hint))),
            )?;
            let builder =
                ParquetRecordBatchStreamBuilder::new_with_metadata(source.reader(path)?, metadata);
            let mut stream = stream_columns(builder, &names, path)?;
            while let Some(batch) = stream.try_next().await? {
                batches.push(batch);
            }
        }
        let record_keys = record_keys_of(&batches, &dataset.key, secret)?;
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
        let batch = comparable(&batch.project(&filterable)?, &dataset)?;
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
            bins: inventory
                .showcase_bins
                .iter()
                .filter(|b| b.field.dataset == inventory.cohort_dataset)
                .map(|b| (b.field.field.clone(), b.edges.iter().map(|e| e.0).collect()))
                .collect(),
            postings: std::sync::OnceLock::new(),
            public: std::sync::Mutex::new(None),
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
        // fields counted side by side, one thread per core
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut fields: Vec<(usize, FieldAggregate)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    scope.spawn(move || {
                        self.fields
                            .iter()
                            .enumerate()
                            .skip(t)
                            .step_by(threads)
                            .map(|(i, (field, field_type, values))| {
                                let shape = match (self.bins.get(&field.field), values) {
                                    // the custodian's edges
                                    (Some(edges), Values::Numbers(_)) => Shape::Histogram {
                                        edges: edges.clone(),
                                        years: *field_type == FieldType::Date,
                                    },
                                    _ => shape_of(values, *field_type),
                                };
                                (i, self.count(field, *field_type, values, &shape, None))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("a counting thread"))
                .collect()
        });
        fields.sort_by_key(|(i, _)| *i);
        let fields = fields.into_iter().map(|(_, f)| f).collect();
        ShowcaseAggregates {
            version: self.version,
            participants,
            fields,
        }
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
                let shape = Shape::like(full);
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

/// The filterable columns in the types the filter compares in (integers as
/// Int64, texts dictionary-encoded), converted once so that a query casts
/// nothing.
fn comparable(batch: &RecordBatch, dataset: &Dataset) -> Result<RecordBatch, DispenseError> {
    let schema = batch.schema();
    let convert =
        |field: &arrow_schema::Field, column: &ArrayRef| -> Result<ArrayRef, DispenseError> {
            let target = match (
                dataset.field(field.name()).map(|f| f.field_type),
                column.data_type(),
            ) {
                // 32-bit integers stay so: the filter compares them as such
                (Some(FieldType::Integer), DataType::Int32 | DataType::Int64) => None,
                (Some(FieldType::Integer), _) => Some(DataType::Int64),
                (Some(FieldType::String), _) => Some(DataType::Dictionary(
                    Box::new(DataType::Int32),
                    Box::new(DataType::Utf8),
                )),
                _ => None,
            };
            Ok(match target {
                Some(t) if *column.data_type() != t => arrow_cast::cast(column, &t)?,
                _ => column.clone(),
            })
        };
    // the columns side by side, one thread each
    let columns: Vec<ArrayRef> = std::thread::scope(|scope| {
        let handles: Vec<_> = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(field, column)| scope.spawn(move || convert(field, column)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a conversion thread"))
            .collect::<Result<_, _>>()
    })?;
    let fields: Vec<arrow_schema::Field> = schema
        .fields()
        .iter()
        .zip(&columns)
        .map(|(f, c)| arrow_schema::Field::new(f.name(), c.data_type().clone(), true))
        .collect();
    Ok(RecordBatch::try_new(
        std::sync::Arc::new(arrow_schema::Schema::new(fields)),
        columns,
    )?)
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
            // the codes of a dictionary (texts are kept dictionary-encoded
            // for the filter; booleans are encoded here)
            let coded = arrow_cast::cast(
                column,
                &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            )?;
            let dictionary = coded.as_dictionary::<Int32Type>();
            // one code per distinct text (a dictionary read as such may
            // repeat a value)
            let mut names: Vec<String> = Vec::new();
            let mut index: HashMap<&str, u32> = HashMap::new();
            let canonical: Vec<u32> = dictionary
                .values()
                .as_string::<i32>()
                .iter()
                .map(|n| {
                    let n = n.unwrap_or_default();
                    *index.entry(n).or_insert_with(|| {
                        names.push(n.to_owned());
                        (names.len() - 1) as u32
                    })
                })
                .collect();
            let codes = dictionary
                .keys()
                .iter()
                .map(|k| k.map_or(MISSING, |k| canonical[k as usize]))
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
            let mut present: Vec<f64> = numbers.iter().copied().filter(|v| !v.is_nan()).collect();
            let edges = if present.is_empty() {
                Vec::new()
            } else {
                // two order statistics, not a sort
                let last = present.len() - 1;
                let mut at = |q: f64| {
                    let i = (last as f64 * q).round() as usize;
                    *present.select_nth_unstable_by(i, f64::total_cmp).1
                };
                let (low, high) = (at(0.05), at(0.95));
                nice_edges(low, high, TARGET_BINS, field_type != FieldType::Float)
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
