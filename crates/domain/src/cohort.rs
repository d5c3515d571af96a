//! The cohort filter language: a JSON expression tree over the fields of the
//! inventory's cohort dataset, type-checked before it is stored or run.
//!
//! ```json
//! {"and": [
//!   {"field": "sex", "op": "=", "value": "F"},
//!   {"field": "age_at_recruitment", "op": "between", "low": 40, "high": 69},
//!   {"or": [{"field": "bmi", "op": ">=", "value": 30}, {"field": "diabetes", "op": "=", "value": true}]},
//!   {"not": {"field": "smoking_status", "op": "is_null"}},
//!   {"field": "recruitment_centre", "op": "in", "values": ["Leeds", "Bristol"]},
//!   {"field": "recruitment_date", "op": "<", "value": "2009-01-01"}
//! ]}
//! ```
//! Nodes: `{"and": [..]}`, `{"or": [..]}` (one or more children),
//! `{"not": node}`, and predicates `{"field", "op", ...}` with `op` one of
//! `=`, `!=`, `<`, `<=`, `>`, `>=` (`value`), `in` (`values`), `between`
//! (`low`, `high`, inclusive) and `is_null`. Ordering operators apply to
//! numbers, strings and dates, not booleans; `null` is never a literal (use
//! `is_null`). Dates are written `YYYY-MM-DD`.
//!
//! Every error names the path of the offending node, e.g. `and[2].or[0].value`.
//! Trees are bounded: at most [`MAX_DEPTH`] levels, [`MAX_NODES`] nodes and
//! [`MAX_IN_VALUES`] values per `in` list.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::{Dataset, DomainError, FieldType};

/// The JSON Schema of a cohort filter node, for API documents (the
/// filter itself travels as JSON and is checked by [`parse`]).
pub struct FilterSchema;

impl schemars::JsonSchema for FilterSchema {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CohortFilter".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let node = generator.subschema_for::<Self>();
        let scalar = schemars::json_schema!({"type": ["string", "number", "boolean"]});
        let field = schemars::json_schema!({"type": "string", "description": "a field of the cohort dataset"});
        schemars::json_schema!({
            "description": format!(
                "A filter over the cohort dataset: and/or/not nodes over predicates. \
                 At most {MAX_DEPTH} levels and {MAX_NODES} nodes; dates are YYYY-MM-DD; \
                 ordering operators do not apply to booleans."
            ),
            "oneOf": [
                {"type": "object", "required": ["and"], "additionalProperties": false,
                 "properties": {"and": {"type": "array", "minItems": 1, "items": node}}},
                {"type": "object", "required": ["or"], "additionalProperties": false,
                 "properties": {"or": {"type": "array", "minItems": 1, "items": node}}},
                {"type": "object", "required": ["not"], "additionalProperties": false,
                 "properties": {"not": node}},
                {"type": "object", "required": ["field", "op", "value"], "additionalProperties": false,
                 "properties": {"field": field, "op": {"enum": ["=", "!=", "<", "<=", ">", ">="]}, "value": scalar}},
                {"type": "object", "required": ["field", "op", "values"], "additionalProperties": false,
                 "properties": {"field": field, "op": {"const": "in"},
                                "values": {"type": "array", "minItems": 1, "maxItems": MAX_IN_VALUES, "items": scalar}}},
                {"type": "object", "required": ["field", "op", "low", "high"], "additionalProperties": false,
                 "properties": {"field": field, "op": {"const": "between"}, "low": scalar, "high": scalar}},
                {"type": "object", "required": ["field", "op"], "additionalProperties": false,
                 "properties": {"field": field, "op": {"const": "is_null"}}}
            ]
        })
    }
}

/// Deepest nesting of `and`/`or`/`not`.
pub const MAX_DEPTH: usize = 16;
/// Most nodes (predicates and logical operators) in one filter.
pub const MAX_NODES: usize = 256;
/// Most values in one `in` list.
pub const MAX_IN_VALUES: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "=" => Self::Eq,
            "!=" => Self::Ne,
            "<" => Self::Lt,
            "<=" => Self::Le,
            ">" => Self::Gt,
            ">=" => Self::Ge,
            _ => return None,
        })
    }

    fn is_ordering(self) -> bool {
        !matches!(self, Self::Eq | Self::Ne)
    }
}

/// A typed literal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Literal {
    Integer(i64),
    Float(f64),
    Boolean(bool),
    String(String),
    /// Days since 1970-01-01.
    Date(i32),
}

/// A checked filter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Compare {
        field: String,
        op: CmpOp,
        value: Literal,
    },
    In {
        field: String,
        values: Vec<Literal>,
    },
    Between {
        field: String,
        low: Literal,
        high: Literal,
    },
    IsNull {
        field: String,
    },
}

impl Expr {
    /// Every field the filter reads.
    pub fn fields(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_fields(&mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    fn collect_fields<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Self::And(children) | Self::Or(children) => {
                children.iter().for_each(|c| c.collect_fields(out));
            }
            Self::Not(child) => child.collect_fields(out),
            Self::Compare { field, .. }
            | Self::In { field, .. }
            | Self::Between { field, .. }
            | Self::IsNull { field } => out.push(field),
        }
    }
}

/// Parses and type-checks `filter` against the cohort dataset. "Everyone" is
/// not a filter but its absence, written `null` (see [`parse_optional`]).
/// The entity key is never a filter field: it would select people one by
/// one.
pub fn parse(filter: &Value, cohort: &Dataset) -> Result<Expr, DomainError> {
    let mut parser = Parser {
        cohort,
        allowed: None,
        nodes: 0,
    };
    parser.node(filter, "cohort", 0)
}

/// `null` means the whole cohort dataset; anything else must be a filter.
pub fn parse_optional(filter: &Value, cohort: &Dataset) -> Result<Option<Expr>, DomainError> {
    if filter.is_null() {
        Ok(None)
    } else {
        parse(filter, cohort).map(Some)
    }
}

/// [`parse_optional`] for a request: the filter may use only the `allowed`
/// fields (see [`crate::Inventory::cohort_selection_fields`]).
pub fn parse_restricted(
    filter: &Value,
    cohort: &Dataset,
    allowed: &BTreeSet<&str>,
) -> Result<Option<Expr>, DomainError> {
    if filter.is_null() {
        return Ok(None);
    }
    let mut parser = Parser {
        cohort,
        allowed: Some(allowed),
        nodes: 0,
    };
    parser.node(filter, "cohort", 0).map(Some)
}

struct Parser<'a> {
    cohort: &'a Dataset,
    /// The fields a filter may use; none: every field but the key.
    allowed: Option<&'a BTreeSet<&'a str>>,
    nodes: usize,
}

fn err(path: &str, message: impl Into<String>) -> DomainError {
    DomainError::invalid(path, message)
}

impl Parser<'_> {
    fn node(&mut self, value: &Value, path: &str, depth: usize) -> Result<Expr, DomainError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(err(path, format!("filter has more than {MAX_NODES} nodes")));
        }
        if depth > MAX_DEPTH {
            return Err(err(
                path,
                format!("filter is nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        let Value::Object(map) = value else {
            return Err(err(path, "expected an object (a filter node)"));
        };
        if map.contains_key("field") {
            return self.predicate(map, path);
        }
        if map.len() != 1 {
            return Err(err(
                path,
                "expected exactly one of \"and\", \"or\", \"not\", or a predicate with \"field\"",
            ));
        }
        let (key, inner) = map.iter().next().expect("one entry");
        let inner_path = format!("{path}.{key}");
        match key.as_str() {
            "and" | "or" => {
                let Value::Array(items) = inner else {
                    return Err(err(&inner_path, "expected an array of filter nodes"));
                };
                if items.is_empty() {
                    return Err(err(&inner_path, "needs at least one filter node"));
                }
                let children = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.node(item, &format!("{inner_path}[{i}]"), depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(if key == "and" {
                    Expr::And(children)
                } else {
                    Expr::Or(children)
                })
            }
            "not" => Ok(Expr::Not(Box::new(self.node(
                inner,
                &inner_path,
                depth + 1,
            )?))),
            other => Err(err(
                path,
                format!(
                    "unknown operator {other:?}; expected \"and\", \"or\", \"not\" or a predicate"
                ),
            )),
        }
    }

    fn predicate(&mut self, map: &Map<String, Value>, path: &str) -> Result<Expr, DomainError> {
        let field_path = format!("{path}.field");
        let Some(Value::String(name)) = map.get("field") else {
            return Err(err(&field_path, "expected a field name (string)"));
        };
        let field = self.cohort.field(name).ok_or_else(|| {
            err(
                &field_path,
                format!("unknown field {name:?} in dataset {:?}", self.cohort.name),
            )
        })?;
        if *name == self.cohort.key {
            return Err(err(
                &field_path,
                format!(
                    "{name:?} is the entity key: it identifies participants and cannot select a cohort"
                ),
            ));
        }
        if let Some(allowed) = self.allowed
            && !allowed.contains(name.as_str())
        {
            let listed: Vec<&str> = allowed.iter().copied().collect();
            return Err(err(
                &field_path,
                format!(
                    "field {name:?} may not select a cohort here; allowed: the showcase fields and those of the selected collections ({})",
                    listed.join(", ")
                ),
            ));
        }
        let field_type = field.field_type;
        let op_path = format!("{path}.op");
        let Some(Value::String(op)) = map.get("op") else {
            return Err(err(&op_path, "expected an operator (string)"));
        };
        let allowed: &[&str] = match op.as_str() {
            "is_null" => &["field", "op"],
            "in" => &["field", "op", "values"],
            "between" => &["field", "op", "low", "high"],
            _ => &["field", "op", "value"],
        };
        if let Some(extra) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(err(
                &format!("{path}.{extra}"),
                format!("unexpected key for operator {op:?}"),
            ));
        }
        if field_type == FieldType::Other && op != "is_null" {
            return Err(err(
                &field_path,
                format!("field {name:?} has a type that filters cannot compare"),
            ));
        }
        let field = name.clone();
        match op.as_str() {
            "is_null" => Ok(Expr::IsNull { field }),
            "in" => {
                let values_path = format!("{path}.values");
                let Some(Value::Array(items)) = map.get("values") else {
                    return Err(err(&values_path, "expected an array of values"));
                };
                if items.is_empty() || items.len() > MAX_IN_VALUES {
                    return Err(err(
                        &values_path,
                        format!("needs between 1 and {MAX_IN_VALUES} values"),
                    ));
                }
                let values = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| literal(v, field_type, &format!("{values_path}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Expr::In { field, values })
            }
            "between" => {
                if field_type == FieldType::Boolean {
                    return Err(err(
                        &op_path,
                        "\"between\" does not apply to a boolean field",
                    ));
                }
                let low = required_literal(map, "low", field_type, path)?;
                let high = required_literal(map, "high", field_type, path)?;
                if literal_gt(&low, &high) {
                    return Err(err(&format!("{path}.low"), "low is greater than high"));
                }
                Ok(Expr::Between { field, low, high })
            }
            other => {
                let op = CmpOp::parse(other).ok_or_else(|| {
                    err(
                        &op_path,
                        format!(
                            "unknown operator {other:?}; expected one of =, !=, <, <=, >, >=, in, between, is_null"
                        ),
                    )
                })?;
                if op.is_ordering() && field_type == FieldType::Boolean {
                    return Err(err(
                        &op_path,
                        format!("{other:?} does not apply to a boolean field"),
                    ));
                }
                let value = required_literal(map, "value", field_type, path)?;
                Ok(Expr::Compare { field, op, value })
            }
        }
    }
}

fn required_literal(
    map: &Map<String, Value>,
    key: &str,
    field_type: FieldType,
    path: &str,
) -> Result<Literal, DomainError> {
    let path = format!("{path}.{key}");
    let value = map.get(key).ok_or_else(|| err(&path, "missing"))?;
    literal(value, field_type, &path)
}

fn literal(value: &Value, field_type: FieldType, path: &str) -> Result<Literal, DomainError> {
    let mismatch = || {
        let wanted = match field_type {
            FieldType::Integer => "a whole number",
            FieldType::Float => "a number",
            FieldType::Boolean => "true or false",
            FieldType::String => "a text",
            FieldType::Date => "a date as YYYY-MM-DD",
            FieldType::Other => "nothing: the field cannot be filtered on",
        };
        let given = match value {
            Value::String(s) => format!("the text {s:?}"),
            Value::Array(_) => "a list".to_owned(),
            Value::Object(_) => "an object".to_owned(),
            other => other.to_string(),
        };
        err(
            path,
            format!(
                "the field is {}: expected {wanted}, got {given}",
                field_type.as_str()
            ),
        )
    };
    if value.is_null() {
        return Err(err(
            path,
            "null is not a value; use the \"is_null\" operator",
        ));
    }
    match field_type {
        FieldType::Integer => match value.as_i64() {
            Some(i) => Ok(Literal::Integer(i)),
            // 40.5 against an integer field is a legitimate bound
            None => value
                .as_f64()
                .filter(|f| f.is_finite())
                .map(Literal::Float)
                .ok_or_else(mismatch),
        },
        FieldType::Float => value
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Literal::Float)
            .ok_or_else(mismatch),
        FieldType::Boolean => value.as_bool().map(Literal::Boolean).ok_or_else(mismatch),
        FieldType::String => value
            .as_str()
            .map(|s| Literal::String(s.to_owned()))
            .ok_or_else(mismatch),
        FieldType::Date => {
            let s = value.as_str().ok_or_else(mismatch)?;
            parse_date(s)
                .map(Literal::Date)
                .ok_or_else(|| err(path, format!("expected a date as YYYY-MM-DD, got {s:?}")))
        }
        FieldType::Other => Err(mismatch()),
    }
}

fn literal_gt(a: &Literal, b: &Literal) -> bool {
    let num = |l: &Literal| match l {
        Literal::Integer(i) => Some(*i as f64),
        Literal::Float(f) => Some(*f),
        _ => None,
    };
    match (a, b) {
        (Literal::String(x), Literal::String(y)) => x > y,
        (Literal::Date(x), Literal::Date(y)) => x > y,
        _ => matches!((num(a), num(b)), (Some(x), Some(y)) if x > y),
    }
}

/// Parses `YYYY-MM-DD` into days since 1970-01-01, rejecting impossible dates.
pub fn parse_date(s: &str) -> Option<i32> {
    let bytes = s.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year: i32 = s[0..4].parse().ok()?;
    let month: u32 = s[5..7].parse().ok()?;
    let day: u32 = s[8..10].parse().ok()?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's `days_from_civil`.
pub fn days_from_civil(year: i32, month: u32, day: u32) -> i32 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = month as i32;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::inventory::tests::inventory;

    fn check(filter: Value) -> Result<Expr, DomainError> {
        let inv = inventory();
        parse(&filter, inv.cohort().unwrap())
    }

    fn error_path(filter: Value) -> String {
        check(filter).unwrap_err().field().unwrap().to_owned()
    }

    #[test]
    fn accepts_every_operator() {
        let expr = check(json!({"and": [
            {"field": "sex", "op": "=", "value": "F"},
            {"field": "sex", "op": "!=", "value": "M"},
            {"field": "age", "op": "<", "value": 70},
            {"field": "age", "op": "<=", "value": 69.5},
            {"field": "bmi", "op": ">", "value": 18},
            {"field": "bmi", "op": ">=", "value": 18.5},
            {"field": "age", "op": "between", "low": 40, "high": 69},
            {"field": "sex", "op": "in", "values": ["F", "M"]},
            {"field": "smoker", "op": "=", "value": false},
            {"field": "recruited_on", "op": "<", "value": "2009-01-01"},
            {"or": [{"field": "bmi", "op": "is_null"}, {"not": {"field": "genotype_array", "op": "is_null"}}]}
        ]}))
        .unwrap();
        assert_eq!(
            expr.fields(),
            vec![
                "age",
                "bmi",
                "genotype_array",
                "recruited_on",
                "sex",
                "smoker"
            ]
        );
        match &expr {
            Expr::And(children) => {
                assert_eq!(children.len(), 11);
                assert_eq!(
                    children[9],
                    Expr::Compare {
                        field: "recruited_on".into(),
                        op: CmpOp::Lt,
                        value: Literal::Date(14245)
                    }
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// Attack: a cohort of one, picked by the participant key, or by a
    /// field the request did not select: both refused, naming the field.
    #[test]
    fn the_key_never_and_only_allowed_fields_select_a_cohort() {
        let inv = inventory();
        let cohort = inv.cohort().unwrap();
        let one = json!({"and": [{"field": "age", "op": ">", "value": 1}, {"field": "participant_id", "op": "=", "value": 1000001}]});
        let err = parse(&one, cohort).unwrap_err();
        assert_eq!(err.field(), Some("cohort.and[1].field"));
        assert!(err.to_string().contains("entity key"), "{err}");
        let allowed = BTreeSet::from(["sex", "age"]);
        let err = parse_restricted(&one, cohort, &allowed).unwrap_err();
        assert_eq!(err.field(), Some("cohort.and[1].field"));
        let outside = json!({"or": [{"field": "sex", "op": "=", "value": "F"}, {"field": "bmi", "op": ">", "value": 40}]});
        assert!(parse(&outside, cohort).is_ok(), "bmi is a cohort field");
        let err = parse_restricted(&outside, cohort, &allowed).unwrap_err();
        assert_eq!(err.field(), Some("cohort.or[1].field"));
        assert!(err.to_string().contains("age, sex"), "{err}");
        let fine = json!({"field": "age", "op": ">=", "value": 40});
        assert!(parse_restricted(&fine, cohort, &allowed).unwrap().is_some());
        assert!(
            parse_restricted(&Value::Null, cohort, &allowed)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn errors_name_the_path() {
        let cases = vec![
            (
                json!({"field": "eid", "op": "=", "value": 1}),
                "cohort.field",
            ),
            (
                json!({"and": [{"field": "age", "op": "=", "value": "old"}]}),
                "cohort.and[0].value",
            ),
            (
                json!({"or": [{"field": "sex", "op": "=", "value": "F"}, {"not": {"field": "smoker", "op": "<", "value": true}}]}),
                "cohort.or[1].not.op",
            ),
            (json!({"field": "age", "op": "~", "value": 1}), "cohort.op"),
            (
                json!({"field": "age", "op": "=", "value": null}),
                "cohort.value",
            ),
            (json!({"field": "age", "op": "="}), "cohort.value"),
            (
                json!({"field": "age", "op": "in", "values": []}),
                "cohort.values",
            ),
            (
                json!({"field": "sex", "op": "in", "values": ["F", 3]}),
                "cohort.values[1]",
            ),
            (
                json!({"field": "age", "op": "between", "low": 50, "high": 40}),
                "cohort.low",
            ),
            (
                json!({"field": "age", "op": "between", "low": 50}),
                "cohort.high",
            ),
            (
                json!({"field": "recruited_on", "op": "=", "value": "2009-02-30"}),
                "cohort.value",
            ),
            (
                json!({"field": "genotype_array", "op": "=", "value": 1}),
                "cohort.field",
            ),
            (
                json!({"field": "age", "op": "=", "value": 1, "extra": 2}),
                "cohort.extra",
            ),
            (json!({"xor": []}), "cohort"),
            (json!({"and": []}), "cohort.and"),
            (json!({"and": {}}), "cohort.and"),
            (json!([1, 2]), "cohort"),
            (json!("age > 3"), "cohort"),
            (json!({"and": [{}], "or": []}), "cohort"),
            (json!({"field": 7, "op": "="}), "cohort.field"),
            (
                json!({"field": "sex", "op": "=", "value": "F'; DROP TABLE requests; --"}),
                "ok",
            ),
        ];
        for (filter, expected) in cases {
            let got = match check(filter.clone()) {
                Ok(_) => "ok".to_owned(),
                Err(e) => e.field().unwrap().to_owned(),
            };
            assert_eq!(got, expected, "{filter}");
        }
    }

    #[test]
    fn depth_and_size_are_bounded() {
        let mut deep = json!({"field": "age", "op": "=", "value": 1});
        for _ in 0..MAX_DEPTH {
            deep = json!({"not": deep});
        }
        assert!(check(deep.clone()).is_ok());
        let too_deep = json!({"not": deep});
        assert!(error_path(too_deep).starts_with("cohort.not.not"));

        let leaf = json!({"field": "age", "op": ">", "value": 1});
        let wide = json!({"or": vec![leaf.clone(); MAX_NODES - 1]});
        assert!(check(wide).is_ok());
        let too_wide = json!({"or": vec![leaf; MAX_NODES]});
        assert_eq!(
            error_path(too_wide),
            format!("cohort.or[{}]", MAX_NODES - 1)
        );

        let many: Vec<i64> = (0..=MAX_IN_VALUES as i64).collect();
        assert_eq!(
            error_path(json!({"field": "age", "op": "in", "values": many})),
            "cohort.values"
        );
    }

    #[test]
    fn dates_round_trip_the_calendar() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2000-03-01"), Some(11017));
        assert_eq!(parse_date("2024-02-29"), Some(19782));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("1900-02-29"), None);
        assert_eq!(parse_date("2023-13-01"), None);
        assert_eq!(parse_date("23-01-01"), None);
        assert_eq!(parse_date("1969-12-31"), Some(-1));
    }

    #[test]
    fn null_means_everyone() {
        let inv = inventory();
        assert_eq!(
            parse_optional(&Value::Null, inv.cohort().unwrap()).unwrap(),
            None
        );
    }
}
