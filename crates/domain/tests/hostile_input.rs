//! Hostile input for the pure parsers: thousands of random and mutated
//! JSON documents (a fixed seed, so a failure replays) through the cohort
//! filter parser, the inventory and pipeline validators and the file
//! inventory parser. Nothing may panic; every refusal is an error that
//! names a field.

use serde_json::{Value, json};
use tre_domain::files::{FileProblems, check_entries, parse_tsv};
use tre_domain::{Dataset, Field, FieldType, Inventory, ReviewPipeline};

/// SplitMix64: small, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const WORDS: [&str; 24] = [
    "field",
    "op",
    "value",
    "values",
    "and",
    "or",
    "not",
    "low",
    "high",
    "age",
    "sex",
    "bmi",
    "recruited_on",
    "participant_id",
    "=",
    "!=",
    "<",
    ">=",
    "between",
    "in",
    "is_null",
    "",
    "\u{0}",
    "é",
];

/// A random JSON value whose keys and strings are mostly words the
/// parsers know, so the documents get past their first checks.
fn value(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth == 0 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(*rng.pick(&[0i64, -1, 1, 40, i64::MAX, i64::MIN])),
        3 => json!(*rng.pick(&[0.5f64, -1e308, 1e308, f64::MIN_POSITIVE])),
        4 => json!(*rng.pick(&WORDS)),
        5 | 6 => {
            let n = rng.below(4);
            let mut map = serde_json::Map::new();
            for _ in 0..n {
                map.insert((*rng.pick(&WORDS)).to_owned(), value(rng, depth - 1));
            }
            Value::Object(map)
        }
        _ => Value::Array((0..rng.below(4)).map(|_| value(rng, depth - 1)).collect()),
    }
}

fn dataset() -> Dataset {
    let field = |name: &str, field_type| Field {
        name: name.into(),
        field_type,
        description: String::new(),
    };
    Dataset {
        name: "participants".into(),
        description: String::new(),
        locations: vec!["p.parquet".into()],
        key: "participant_id".into(),
        fields: vec![
            field("participant_id", FieldType::Integer),
            field("age", FieldType::Integer),
            field("sex", FieldType::String),
            field("bmi", FieldType::Float),
            field("recruited_on", FieldType::Date),
        ],
    }
}

#[test]
fn the_cohort_parser_never_panics_and_names_a_field() {
    let mut rng = Rng(20_261_202);
    let cohort = dataset();
    let valid = [
        json!({"field": "age", "op": ">=", "value": 40}),
        json!({"and": [{"field": "sex", "op": "=", "value": "F"}, {"not": {"field": "bmi", "op": "is_null"}}]}),
        json!({"field": "recruited_on", "op": "between", "low": "2007-01-01", "high": "2008-12-31"}),
    ];
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..20_000 {
        let filter = if i % 2 == 0 {
            value(&mut rng, 6)
        } else {
            // a valid filter with one part replaced by noise
            let mut filter = rng.pick(&valid).clone();
            if let Value::Object(map) = &mut filter {
                let key = (*rng.pick(&WORDS)).to_owned();
                map.insert(key, value(&mut rng, 3));
            }
            filter
        };
        match tre_domain::cohort::parse_optional(&filter, &cohort) {
            Ok(_) => accepted += 1,
            Err(e) => {
                refused += 1;
                let field = e.field().unwrap_or_default();
                assert!(field.starts_with("cohort"), "{filter}: {e}");
            }
        }
    }
    assert!(accepted > 100 && refused > 100, "{accepted} / {refused}");
    // deep nesting is refused, not a stack overflow
    let mut deep = json!({"field": "age", "op": "=", "value": 1});
    for _ in 0..100_000 {
        let mut map = serde_json::Map::new();
        map.insert("not".into(), deep);
        deep = Value::Object(map);
    }
    assert!(tre_domain::cohort::parse_optional(&deep, &cohort).is_err());
    std::mem::forget(deep); // dropping it recursively would be the test's own overflow
}

#[test]
fn inventories_pipelines_and_file_inventories_never_panic() {
    let mut rng = Rng(7);
    let base = serde_json::to_value(json!({
        "datasets": [{"name": "participants", "locations": ["p.parquet"], "key": "participant_id",
                      "fields": [{"name": "participant_id", "type": "integer"}, {"name": "age", "type": "integer"}]}],
        "cohort_dataset": "participants",
        "collections": [{"name": "all", "fields": [{"dataset": "participants", "field": "age"}]}],
        "showcase": [{"dataset": "participants", "field": "age"}],
    }))
    .unwrap();
    for _ in 0..5_000 {
        let mut doc = base.clone();
        if let Value::Object(map) = &mut doc {
            let key = (*rng.pick(&[
                "datasets",
                "collections",
                "showcase",
                "cohort_fields",
                "showcase_bins",
                "file_collections",
                "cohort_dataset",
                "files",
            ]))
            .to_owned();
            map.insert(key, value(&mut rng, 4));
        }
        if let Ok(inventory) = serde_json::from_value::<Inventory>(doc)
            && let Err(e) = inventory.validate()
        {
            assert!(e.field().is_some_and(|f| f.starts_with("inventory")), "{e}");
        }
        if let Ok(pipeline) = serde_json::from_value::<ReviewPipeline>(value(&mut rng, 4)) {
            let _ = pipeline.validate();
            let _ = pipeline.publish_problems();
        }
    }
    // file inventories: random bytes of TSV-ish text
    let alphabet = [
        "entity",
        "collection",
        "location",
        "size",
        "sha256",
        "\t",
        "\n",
        "\r\n",
        "1",
        "-1",
        "../",
        "/",
        "%2f",
        "x.vcf",
        "ecg",
        "\u{0}",
        "é",
        "99999999999999999999999",
    ];
    for _ in 0..5_000 {
        let text: String = (0..rng.below(60)).map(|_| *rng.pick(&alphabet)).collect();
        if let Ok(entries) = parse_tsv(&text) {
            let mut problems = FileProblems::default();
            check_entries(&entries, &["ecg"].into(), &mut problems);
            assert!(problems.first.len() <= tre_domain::files::MAX_PROBLEMS);
        }
    }
}
