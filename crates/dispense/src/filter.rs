//! Evaluates a checked cohort filter over record batches of the cohort
//! dataset with Arrow kernels, in SQL's three-valued logic: a comparison
//! with a null is unknown, `not unknown` is unknown, and a row is in the
//! cohort only when the filter is true (so `bmi >= 30` and `not (bmi >= 30)`
//! both leave out participants whose BMI is missing; `is_null` finds them).

use std::sync::Arc;

use arrow_arith::boolean::{and_kleene, is_null, not, or_kleene};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int32DictionaryArray,
    Int64Array, RecordBatch, Scalar, StringArray,
};
use arrow_ord::cmp;
use arrow_schema::DataType;
use tre_domain::cohort::{CmpOp, Expr, Literal};
use tre_domain::{Dataset, FieldType};

use crate::DispenseError;

/// The filter's truth value for every row of `batch` (null = unknown).
pub fn evaluate(
    expr: &Expr,
    batch: &RecordBatch,
    dataset: &Dataset,
) -> Result<BooleanArray, DispenseError> {
    Evaluator { batch, dataset }.eval(expr)
}

struct Evaluator<'a> {
    batch: &'a RecordBatch,
    dataset: &'a Dataset,
}

impl Evaluator<'_> {
    fn eval(&self, expr: &Expr) -> Result<BooleanArray, DispenseError> {
        Ok(match expr {
            Expr::And(children) => self.fold(children, and_kleene)?,
            Expr::Or(children) => self.fold(children, or_kleene)?,
            Expr::Not(child) => not(&self.eval(child)?)?,
            Expr::IsNull { field } => is_null(self.column(field)?.as_ref())?,
            Expr::Compare { field, op, value } => self.compare(field, *op, value)?,
            Expr::In { field, values } => {
                let mut acc: Option<BooleanArray> = None;
                for value in values {
                    let eq = self.compare(field, CmpOp::Eq, value)?;
                    acc = Some(match acc {
                        None => eq,
                        Some(a) => or_kleene(&a, &eq)?,
                    });
                }
                acc.ok_or_else(|| DispenseError::data("empty in list"))?
            }
            Expr::Between { field, low, high } => and_kleene(
                &self.compare(field, CmpOp::Ge, low)?,
                &self.compare(field, CmpOp::Le, high)?,
            )?,
        })
    }

    fn fold(
        &self,
        children: &[Expr],
        op: fn(&BooleanArray, &BooleanArray) -> Result<BooleanArray, arrow_schema::ArrowError>,
    ) -> Result<BooleanArray, DispenseError> {
        let mut iter = children.iter();
        let first = iter
            .next()
            .ok_or_else(|| DispenseError::data("empty and/or"))?;
        let mut acc = self.eval(first)?;
        for child in iter {
            acc = op(&acc, &self.eval(child)?)?;
        }
        Ok(acc)
    }

    fn column(&self, field: &str) -> Result<&ArrayRef, DispenseError> {
        self.batch.column_by_name(field).ok_or_else(|| {
            DispenseError::data(format!(
                "cohort dataset {:?} has no column {field:?}",
                self.dataset.name
            ))
        })
    }

    fn compare(
        &self,
        field: &str,
        op: CmpOp,
        value: &Literal,
    ) -> Result<BooleanArray, DispenseError> {
        let field_type = self
            .dataset
            .field(field)
            .map(|f| f.field_type)
            .ok_or_else(|| DispenseError::data(format!("unknown field {field:?}")))?;
        let column = self.column(field)?;
        // one comparable type per pair: integers meet float bounds as floats
        let (target, scalar): (DataType, ArrayRef) = match (field_type, value) {
            // a 32-bit column meets a literal that fits as it is (half the
            // memory read); one that does not fit, as 64 bits
            (FieldType::Integer, Literal::Integer(i))
                if column.data_type() == &DataType::Int32 && i32::try_from(*i).is_ok() =>
            {
                (DataType::Int32, Arc::new(Int32Array::from(vec![*i as i32])))
            }
            (FieldType::Integer, Literal::Integer(i)) => {
                (DataType::Int64, Arc::new(Int64Array::from(vec![*i])))
            }
            (FieldType::Integer | FieldType::Float, Literal::Float(f)) => {
                (DataType::Float64, Arc::new(Float64Array::from(vec![*f])))
            }
            (FieldType::Float, Literal::Integer(i)) => (
                DataType::Float64,
                Arc::new(Float64Array::from(vec![*i as f64])),
            ),
            (FieldType::Boolean, Literal::Boolean(b)) => {
                (DataType::Boolean, Arc::new(BooleanArray::from(vec![*b])))
            }
            (FieldType::String, Literal::String(s)) => (
                DataType::Utf8,
                Arc::new(StringArray::from(vec![s.as_str()])),
            ),
            (FieldType::Date, Literal::Date(d)) => {
                (DataType::Date32, Arc::new(Date32Array::from(vec![*d])))
            }
            (t, v) => {
                return Err(DispenseError::data(format!(
                    "field {field:?} ({}) cannot be compared with {v:?}",
                    t.as_str()
                )));
            }
        };
        // text equality on a dictionary-encoded column: one comparison of
        // integer codes (the showcase's columns are kept so)
        if let (Some(dictionary), Literal::String(text), CmpOp::Eq | CmpOp::Ne) = (
            column.as_any().downcast_ref::<Int32DictionaryArray>(),
            value,
            op,
        ) {
            return dictionary_eq(dictionary, text, op == CmpOp::Eq);
        }
        // a column already of the target type (or dictionary-encoded
        // values of it, which the kernels compare by dictionary) is used
        // as it is: the showcase's columns are kept so, for speed
        let comparable = match column.data_type() {
            DataType::Dictionary(_, values) => **values == target,
            other => *other == target,
        };
        let left = if comparable {
            column.clone()
        } else {
            arrow_cast::cast(column, &target)?
        };
        let right = Scalar::new(scalar);
        Ok(match op {
            CmpOp::Eq => cmp::eq(&left, &right)?,
            CmpOp::Ne => cmp::neq(&left, &right)?,
            CmpOp::Lt => cmp::lt(&left, &right)?,
            CmpOp::Le => cmp::lt_eq(&left, &right)?,
            CmpOp::Gt => cmp::gt(&left, &right)?,
            CmpOp::Ge => cmp::gt_eq(&left, &right)?,
        })
    }
}

/// `column = text` (or `<>`) over a dictionary's codes; nulls stay
/// unknown.
fn dictionary_eq(
    column: &Int32DictionaryArray,
    text: &str,
    equal: bool,
) -> Result<BooleanArray, DispenseError> {
    let values = column
        .values()
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| DispenseError::data("a text dictionary holds no text"))?;
    let mut codes = (0..values.len()).filter(|i| values.is_valid(*i) && values.value(*i) == text);
    let code = codes.next();
    if codes.next().is_some() {
        // the value under several codes (dictionaries joined as they are):
        // the kernel compares every entry
        let text = Scalar::new(StringArray::from(vec![text]));
        return Ok(if equal {
            cmp::eq(column, &text)?
        } else {
            cmp::neq(column, &text)?
        });
    }
    let keys = column.keys();
    Ok(match code {
        Some(code) => {
            let code = Scalar::new(Int32Array::from(vec![code as i32]));
            if equal {
                cmp::eq(keys, &code)?
            } else {
                cmp::neq(keys, &code)?
            }
        }
        // nobody has it: false (or true) wherever the value is known
        None => BooleanArray::new(
            if equal {
                arrow_buffer::BooleanBuffer::new_unset(keys.len())
            } else {
                arrow_buffer::BooleanBuffer::new_set(keys.len())
            },
            keys.nulls().cloned(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, Int32Array};
    use arrow_schema::{Field as ArrowField, Schema};
    use serde_json::json;
    use tre_domain::Field;

    fn dataset() -> Dataset {
        let f = |name: &str, t| Field {
            name: name.into(),
            field_type: t,
            description: String::new(),
        };
        Dataset {
            name: "people".into(),
            description: String::new(),
            locations: vec![],
            key: "id".into(),
            fields: vec![
                f("id", FieldType::Integer),
                f("age", FieldType::Integer),
                f("bmi", FieldType::Float),
                f("sex", FieldType::String),
            ],
        }
    }

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            ArrowField::new("id", DataType::Int32, false),
            ArrowField::new("age", DataType::Int32, true),
            ArrowField::new("bmi", DataType::Float64, true),
            ArrowField::new("sex", DataType::Utf8, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int32Array::from(vec![1, 2, 3, 4])),
                Arc::new(Int32Array::from(vec![Some(40), Some(55), None, Some(70)])),
                Arc::new(Float64Array::from(vec![
                    Some(31.0),
                    None,
                    Some(22.5),
                    Some(30.0),
                ])),
                Arc::new(StringArray::from(vec![
                    Some("F"),
                    Some("M"),
                    Some("F"),
                    None,
                ])),
            ],
        )
        .unwrap()
    }

    fn rows(filter: serde_json::Value) -> Vec<Option<bool>> {
        let ds = dataset();
        let expr = tre_domain::cohort::parse(&filter, &ds).unwrap();
        evaluate(&expr, &batch(), &ds).unwrap().iter().collect()
    }

    #[test]
    fn three_valued_logic() {
        let ge = json!({"field": "bmi", "op": ">=", "value": 30});
        assert_eq!(
            rows(ge.clone()),
            [Some(true), None, Some(false), Some(true)]
        );
        assert_eq!(
            rows(json!({"not": ge})),
            [Some(false), None, Some(true), Some(false)]
        );
        assert_eq!(
            rows(
                json!({"or": [{"field": "bmi", "op": ">=", "value": 30}, {"field": "age", "op": ">", "value": 50}]})
            ),
            [Some(true), Some(true), None, Some(true)]
        );
        assert_eq!(
            rows(json!({"field": "bmi", "op": "is_null"})),
            [Some(false), Some(true), Some(false), Some(false)]
        );
    }

    #[test]
    fn operators() {
        assert_eq!(
            rows(json!({"field": "age", "op": "between", "low": 40, "high": 55})),
            [Some(true), Some(true), None, Some(false)]
        );
        assert_eq!(
            rows(json!({"field": "age", "op": "<", "value": 55.5})),
            [Some(true), Some(true), None, Some(false)]
        );
        assert_eq!(
            rows(json!({"field": "sex", "op": "in", "values": ["M", "X"]})),
            [Some(false), Some(true), Some(false), None]
        );
        assert_eq!(
            rows(json!({"field": "sex", "op": "!=", "value": "F"})),
            [Some(false), Some(true), Some(false), None]
        );
    }

    /// A dictionary that holds a value twice (batches joined as they are)
    /// still finds every row of it.
    #[test]
    fn a_value_under_two_codes_is_found_under_both() {
        let values = StringArray::from(vec!["F", "M", "F"]);
        let keys = Int32Array::from(vec![Some(0), Some(1), Some(2), None]);
        let column = Int32DictionaryArray::try_new(keys, Arc::new(values)).unwrap();
        assert_eq!(
            dictionary_eq(&column, "F", true).unwrap(),
            BooleanArray::from(vec![Some(true), Some(false), Some(true), None])
        );
        assert_eq!(
            dictionary_eq(&column, "F", false).unwrap(),
            BooleanArray::from(vec![Some(false), Some(true), Some(false), None])
        );
    }

    /// Texts kept dictionary-encoded (as the showcase keeps them) give
    /// exactly what plain texts give, for values present and absent.
    #[test]
    fn dictionary_texts_answer_as_plain_texts() {
        let plain = batch();
        let mut columns = plain.columns().to_vec();
        let sex = plain.schema().index_of("sex").unwrap();
        columns[sex] = arrow_cast::cast(
            &columns[sex],
            &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        )
        .unwrap();
        let fields: Vec<ArrowField> = plain
            .schema()
            .fields()
            .iter()
            .zip(&columns)
            .map(|(f, c)| ArrowField::new(f.name(), c.data_type().clone(), true))
            .collect();
        let coded = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let ds = dataset();
        for filter in [
            json!({"field": "sex", "op": "=", "value": "F"}),
            json!({"field": "sex", "op": "!=", "value": "F"}),
            json!({"field": "sex", "op": "=", "value": "X"}),
            json!({"field": "sex", "op": "!=", "value": "X"}),
            json!({"field": "sex", "op": "in", "values": ["M", "X"]}),
            json!({"not": {"field": "sex", "op": "=", "value": "M"}}),
        ] {
            let expr = tre_domain::cohort::parse(&filter, &ds).unwrap();
            assert_eq!(
                evaluate(&expr, &coded, &ds).unwrap(),
                evaluate(&expr, &plain, &ds).unwrap(),
                "{filter}"
            );
        }
    }
}
