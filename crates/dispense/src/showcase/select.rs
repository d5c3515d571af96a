//! Cohort selection over a version's showcase columns: the rows a filter
//! selects, as bits, with a conjunction narrowed to the rows of its text
//! equality (kept grouped by value) before the rest is evaluated.

use std::collections::HashMap;

use arrow_array::{Array, BooleanArray, UInt32Array};
use arrow_buffer::BooleanBuffer;
use tre_domain::FieldType;
use tre_domain::cohort::{CmpOp, Expr, Literal};

use super::{MISSING, ShowcaseColumns, Values};
use crate::{DispenseError, filter};

/// The participants a cohort filter selects, as one bit per row, with
/// their number (counted once: the gate asks it of each set many times).
#[derive(Debug, Clone)]
pub struct Selection {
    pub(super) bits: BooleanBuffer,
    len: u64,
}

impl Selection {
    pub(super) fn of(bits: BooleanBuffer) -> Self {
        let len = bits.count_set_bits() as u64;
        Self { bits, len }
    }

    /// How many participants are in it.
    pub fn len(&self) -> u64 {
        self.len
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

/// The rows of each value of a text field: `rows[starts[c]..starts[c + 1]]`
/// (ascending) hold code `c`.
#[derive(Debug)]
pub(super) struct Postings {
    names: HashMap<String, u32>,
    starts: Vec<usize>,
    rows: Vec<u32>,
}

impl Postings {
    /// A counting sort of the codes.
    fn of(codes: &[u32], names: &[String]) -> Self {
        let mut starts = vec![0usize; names.len() + 1];
        for code in codes.iter().filter(|c| **c != MISSING) {
            starts[*code as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut next = starts.clone();
        let mut rows = vec![0u32; starts[names.len()]];
        for (row, code) in codes.iter().enumerate() {
            if *code != MISSING {
                rows[next[*code as usize]] = row as u32;
                next[*code as usize] += 1;
            }
        }
        Self {
            names: names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i as u32))
                .collect(),
            starts,
            rows,
        }
    }

    fn rows_of(&self, text: &str) -> &[u32] {
        match self.names.get(text) {
            Some(code) => {
                let c = *code as usize;
                &self.rows[self.starts[c]..self.starts[c + 1]]
            }
            None => &[],
        }
    }
}

impl ShowcaseColumns {
    /// The participants `expr` selects (everyone for none); a row where
    /// the filter is unknown is not selected.
    pub fn select(&self, expr: Option<&Expr>) -> Result<Selection, DispenseError> {
        let bits = match expr {
            None => BooleanBuffer::new_set(self.rows()),
            Some(Expr::And(children)) if children.len() > 1 => self.select_all(children)?,
            Some(expr) => true_rows(&filter::evaluate(expr, &self.batch, &self.dataset)?),
        };
        Ok(Selection::of(bits))
    }

    /// The rows where every one of `children` is true. The first is
    /// evaluated on every row; once few rows are left, the others are
    /// evaluated on those rows only (taken out of the columns), by the same
    /// evaluator: a conjunction is true exactly where each part is.
    fn select_all(&self, children: &[Expr]) -> Result<BooleanBuffer, DispenseError> {
        let rows = self.rows();
        let postings = self.postings.get_or_init(|| {
            self.fields
                .iter()
                .filter_map(|(f, t, values)| match (t, values) {
                    (FieldType::String, Values::Text { codes, names }) => {
                        Some((f.field.clone(), Postings::of(codes, names)))
                    }
                    _ => None,
                })
                .collect()
        });
        // a text equality, if there is one, is read from its postings
        let posted = children.iter().position(|c| match c {
            Expr::Compare {
                field,
                op: CmpOp::Eq,
                value: Literal::String(_),
            } => postings.contains_key(field),
            _ => false,
        });
        let (mut bits, rest): (Option<BooleanBuffer>, Vec<&Expr>) = match posted {
            Some(at) => {
                let Expr::Compare {
                    field,
                    value: Literal::String(text),
                    ..
                } = &children[at]
                else {
                    unreachable!("found above")
                };
                let indices = postings[field].rows_of(text).to_vec();
                let rest: Vec<&Expr> = children
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != at)
                    .map(|(_, c)| c)
                    .collect();
                return self.narrow(indices, &rest);
            }
            None => (None, children.iter().collect()),
        };
        for (i, child) in rest.iter().enumerate() {
            if let Some(b) = &bits
                && b.count_set_bits() * SPARSE <= rows
            {
                return self.narrow(b.set_indices().map(|i| i as u32).collect(), &rest[i..]);
            }
            let truth = true_rows(&filter::evaluate(child, &self.batch, &self.dataset)?);
            bits = Some(match bits {
                Some(b) => &b & &truth,
                None => truth,
            });
        }
        Ok(bits.unwrap_or_else(|| BooleanBuffer::new_set(rows)))
    }

    /// The rows among `indices` (ascending) where every one of `children`
    /// is true, evaluated on those rows only (only the columns they read).
    fn narrow(
        &self,
        mut indices: Vec<u32>,
        children: &[&Expr],
    ) -> Result<BooleanBuffer, DispenseError> {
        let rows = self.rows();
        if !children.is_empty() && !indices.is_empty() {
            let mut read: Vec<&str> = children.iter().flat_map(|c| c.fields()).collect();
            read.sort_unstable();
            read.dedup();
            let schema = self.batch.schema();
            let projection: Vec<usize> = read
                .iter()
                .filter_map(|f| schema.index_of(f).ok())
                .collect();
            let mut taken = arrow_select::take::take_record_batch(
                &self.batch.project(&projection)?,
                &UInt32Array::from(indices.clone()),
            )?;
            for child in children {
                let truth = true_rows(&filter::evaluate(child, &taken, &self.dataset)?);
                indices = indices
                    .iter()
                    .zip(truth.iter())
                    .filter_map(|(i, keep)| keep.then_some(*i))
                    .collect();
                taken = arrow_select::filter::filter_record_batch(
                    &taken,
                    &BooleanArray::new(truth, None),
                )?;
            }
        }
        let mut out = arrow_buffer::BooleanBufferBuilder::new(rows);
        out.append_n(rows, false);
        for i in indices {
            out.set_bit(i as usize, true);
        }
        Ok(out.finish())
    }
}

/// When at most one row in this many is left, the rest of a conjunction is
/// evaluated on those rows only.
const SPARSE: usize = 16;

/// Where a filter's truth value is true (not false, not unknown).
fn true_rows(truth: &BooleanArray) -> BooleanBuffer {
    match truth.nulls() {
        Some(known) => truth.values() & known.inner(),
        None => truth.values().clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Source;
    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
    use serde_json::json;
    use std::sync::Arc;
    use tre_domain::{Dataset, Field, FieldRef, Inventory};

    /// 2,000 people: a centre of five, a year of 40, a sex, a BMI (some
    /// missing): written as Parquet and loaded as the showcase loads them.
    async fn people() -> (ShowcaseColumns, Dataset) {
        let dir = std::env::temp_dir().join(format!(
            "tre-showcase-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let n = 2_000i64;
        let batch = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
            ),
            (
                "centre",
                Arc::new(StringArray::from_iter_values((0..n).map(|i| {
                    ["Leeds", "Bristol", "Oxford", "Hull", "Bath"][(i % 5) as usize]
                }))),
            ),
            (
                "year",
                Arc::new(Int64Array::from_iter_values(
                    (0..n).map(|i| 1930 + i * 7 % 40),
                )),
            ),
            (
                "sex",
                Arc::new(StringArray::from_iter((0..n).map(|i| {
                    (i % 11 != 0).then_some(if i % 2 == 0 { "F" } else { "M" })
                }))),
            ),
            (
                "bmi",
                Arc::new(Float64Array::from_iter(
                    (0..n).map(|i| (i % 13 != 0).then_some(17.0 + (i * 3 % 23) as f64)),
                )),
            ),
        ])
        .unwrap();
        let file = std::fs::File::create(dir.join("people.parquet")).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let f = |name: &str, field_type| Field {
            name: name.into(),
            field_type,
            description: String::new(),
        };
        let dataset = Dataset {
            name: "people".into(),
            description: String::new(),
            locations: vec!["people.parquet".into()],
            key: "id".into(),
            fields: vec![
                f("id", FieldType::Integer),
                f("centre", FieldType::String),
                f("year", FieldType::Integer),
                f("sex", FieldType::String),
                f("bmi", FieldType::Float),
            ],
        };
        let r = |field: &str| FieldRef {
            dataset: "people".into(),
            field: field.into(),
        };
        let inventory = Inventory {
            version: 1,
            datasets: vec![dataset.clone()],
            cohort_dataset: "people".into(),
            collections: vec![],
            showcase: vec![r("centre"), r("year"), r("sex"), r("bmi")],
            cohort_fields: None,
            showcase_bins: vec![],
            file_collections: vec![],
            files: None,
        };
        let source = Source::folder(dir).unwrap();
        let columns = ShowcaseColumns::load(&source, &inventory, &[3u8; 32])
            .await
            .unwrap();
        (columns, dataset)
    }

    /// The conjunction taken a few rows at a time selects exactly whom the
    /// plain evaluation of the whole filter selects.
    #[tokio::test]
    async fn narrowed_conjunctions_select_as_the_whole_filter_does() {
        let (columns, dataset) = people().await;
        let centre = json!({"field": "centre", "op": "=", "value": "Hull"});
        let year = json!({"field": "year", "op": "between", "low": 1940, "high": 1945});
        let women = json!({"field": "sex", "op": "=", "value": "F"});
        let obese = json!({"field": "bmi", "op": ">=", "value": 30});
        for filter in [
            json!({"and": [centre, year]}),
            json!({"and": [centre, year, women, obese]}),
            json!({"and": [year, {"not": women}, obese]}),
            json!({"and": [women, centre, {"or": [obese, {"field": "bmi", "op": "is_null"}]}]}),
            json!({"and": [centre, {"not": obese}]}),
            json!({"and": [{"field": "centre", "op": "=", "value": "Nowhere"}, women]}),
            json!({"and": [women, {"field": "year", "op": ">", "value": 1900}]}),
        ] {
            let expr = tre_domain::cohort::parse(&filter, &dataset).unwrap();
            let plain = true_rows(&filter::evaluate(&expr, columns.batch(), &dataset).unwrap());
            let selected = columns.select(Some(&expr)).unwrap();
            assert_eq!(selected.bits, plain, "{filter}");
        }
    }
}
