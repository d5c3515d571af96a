//! The cohort's entity keys, membership tests over key columns, and the
//! per-project pseudonyms that replace keys in dispensed tables.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, BooleanArray};
use arrow_buffer::BooleanBuffer;
use arrow_schema::DataType;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::DispenseError;

/// The entity keys of a cohort, sorted and distinct. Integer keys stay
/// integers; every other key type is compared as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CohortKeys {
    Int(Vec<i64>),
    Text(Vec<String>),
}

impl CohortKeys {
    pub fn len(&self) -> usize {
        match self {
            Self::Int(v) => v.len(),
            Self::Text(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Collects the keys of the rows of `keys` where `selected` is true.
    pub(crate) fn collect(
        parts: Vec<(ArrayRef, BooleanArray)>,
        key_type: &DataType,
    ) -> Result<Self, DispenseError> {
        if is_integer(key_type) {
            let mut out = Vec::new();
            for (keys, selected) in parts {
                let keys = as_int64(&keys)?;
                let keys = keys.as_primitive::<Int64Type>();
                out.extend(
                    (0..keys.len())
                        .filter(|&i| selected.value(i) && !selected.is_null(i) && keys.is_valid(i))
                        .map(|i| keys.value(i)),
                );
            }
            out.sort_unstable();
            out.dedup();
            Ok(Self::Int(out))
        } else {
            let mut out = Vec::new();
            for (keys, selected) in parts {
                let keys = as_text(&keys)?;
                let keys = keys.as_string::<i32>();
                out.extend(
                    (0..keys.len())
                        .filter(|&i| selected.value(i) && !selected.is_null(i) && keys.is_valid(i))
                        .map(|i| keys.value(i).to_owned()),
                );
            }
            out.sort_unstable();
            out.dedup();
            Ok(Self::Text(out))
        }
    }
}

fn is_integer(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
    )
}

fn as_int64(a: &ArrayRef) -> Result<ArrayRef, DispenseError> {
    Ok(arrow_cast::cast(a, &DataType::Int64)?)
}

fn as_text(a: &ArrayRef) -> Result<ArrayRef, DispenseError> {
    Ok(arrow_cast::cast(a, &DataType::Utf8)?)
}

/// A fast membership test built from [`CohortKeys`]: a bitmap over the key
/// range when keys are dense enough, else a hash set.
#[derive(Debug)]
pub enum Membership {
    Bitmap {
        min: i64,
        max: i64,
        bits: Vec<u64>,
    },
    /// Sparse keys: a hash set for rows, the sorted keys for ranges.
    IntSet {
        set: HashSet<i64>,
        sorted: Vec<i64>,
    },
    Text(HashSet<String>),
}

/// Largest bitmap (in bits) worth allocating: 2^30 bits = 128 MiB.
const MAX_BITMAP_BITS: u64 = 1 << 30;

impl Membership {
    pub fn new(keys: &CohortKeys) -> Self {
        match keys {
            CohortKeys::Int(v) if v.is_empty() => Self::IntSet {
                set: HashSet::new(),
                sorted: Vec::new(),
            },
            CohortKeys::Int(v) => {
                let (min, max) = (v[0], v[v.len() - 1]);
                let span = max.abs_diff(min) + 1;
                // dense enough: at most 64 bits of bitmap per key
                if span <= MAX_BITMAP_BITS && span <= 64 * v.len() as u64 {
                    let mut bits = vec![0u64; span.div_ceil(64) as usize];
                    for &k in v {
                        let i = (k - min) as u64;
                        bits[(i / 64) as usize] |= 1 << (i % 64);
                    }
                    Self::Bitmap { min, max, bits }
                } else {
                    Self::IntSet {
                        set: v.iter().copied().collect(),
                        sorted: v.clone(),
                    }
                }
            }
            CohortKeys::Text(v) => Self::Text(v.iter().cloned().collect()),
        }
    }

    fn contains_int(&self, k: i64) -> bool {
        match self {
            Self::Bitmap { min, max, bits } => bit_set(*min, *max, bits, k),
            Self::IntSet { set, .. } => set.contains(&k),
            Self::Text(_) => false,
        }
    }

    /// The key written as text (a file inventory's entity), as the cohort
    /// has it, if it is in the cohort: integer keys in plain decimal
    /// (`007` is `7`), text keys as they are.
    pub fn key_of(&self, entity: &str) -> Option<String> {
        match self {
            Self::Text(set) => set.contains(entity).then(|| entity.to_owned()),
            _ => {
                let k: i64 = entity.trim().parse().ok()?;
                self.contains_int(k).then(|| k.to_string())
            }
        }
    }

    /// True where the key is in the cohort; null keys never are.
    pub fn mask(&self, keys: &ArrayRef) -> Result<BooleanArray, DispenseError> {
        match self {
            Self::Text(set) => {
                let keys = as_text(keys)?;
                let keys = keys.as_string::<i32>();
                Ok((0..keys.len())
                    .map(|i| Some(keys.is_valid(i) && set.contains(keys.value(i))))
                    .collect())
            }
            _ => {
                let keys = as_int64(keys)?;
                let keys = keys.as_primitive::<Int64Type>();
                let values = keys.values();
                // bit-packed directly, one loop per kind: this runs on every
                // source row
                let found = match self {
                    Self::Bitmap { min, max, bits } => {
                        BooleanBuffer::collect_bool(values.len(), |i| {
                            bit_set(*min, *max, bits, values[i])
                        })
                    }
                    _ => {
                        BooleanBuffer::collect_bool(values.len(), |i| self.contains_int(values[i]))
                    }
                };
                Ok(BooleanArray::new(
                    match keys.nulls() {
                        None => found,
                        Some(nulls) => &found & nulls.inner(),
                    },
                    None,
                ))
            }
        }
    }

    /// Whether any cohort key lies in `[lo, hi]` (a row group's key
    /// statistics): exact for integer keys, so a row group between two
    /// parts of a cohort is skipped too.
    pub fn may_contain_range(&self, lo: i64, hi: i64) -> bool {
        match self {
            Self::Bitmap { min, max, bits } => {
                let (lo, hi) = (lo.max(*min), hi.min(*max));
                if lo > hi {
                    return false;
                }
                let (a, b) = (lo.abs_diff(*min), hi.abs_diff(*min));
                let (first, last) = ((a / 64) as usize, (b / 64) as usize);
                (first..=last).any(|w| {
                    let mut word = bits[w];
                    if w == first {
                        word &= !0u64 << (a % 64);
                    }
                    if w == last {
                        word &= !0u64 >> (63 - b % 64);
                    }
                    word != 0
                })
            }
            Self::IntSet { sorted, .. } => {
                let i = sorted.partition_point(|&k| k < lo);
                i < sorted.len() && sorted[i] <= hi
            }
            Self::Text(_) => true,
        }
    }
}

#[inline(always)]
fn bit_set(min: i64, max: i64, bits: &[u64], k: i64) -> bool {
    if k < min || k > max {
        return false;
    }
    let at = k.abs_diff(min);
    bits[(at / 64) as usize] & (1 << (at % 64)) != 0
}

/// Replaces entity keys by keyed pseudonyms: the first 128 bits of
/// HMAC-SHA256(project key, the key as decimal text or its UTF-8), in hex.
/// The same participant gets the same pseudonym in every table of one
/// project and an unrelated one in any other project.
#[derive(Clone)]
pub struct Pseudonymiser {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymiser(..)")
    }
}

impl Pseudonymiser {
    /// `key`: the project's secret, 32 bytes from the store.
    pub fn new(key: &[u8]) -> Self {
        Self {
            mac: Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length"),
        }
    }

    pub fn pseudonym(&self, key: &str) -> String {
        let hex = self.pseudonym_hex(key);
        String::from_utf8(hex.to_vec()).expect("hex is ASCII")
    }

    fn pseudonym_hex(&self, key: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(key.as_bytes());
        let mut hex = [0u8; 32];
        hex::encode_to_slice(&mac.finalize().into_bytes()[..16], &mut hex)
            .expect("16 bytes fill 32 hex digits");
        hex
    }

    /// A text column of pseudonyms for a key column (nulls stay null).
    /// Each distinct key of the column is hashed once: event tables repeat
    /// a participant's key on many rows.
    pub fn column(&self, keys: &ArrayRef) -> Result<ArrayRef, DispenseError> {
        let n = keys.len();
        let mut out = StringBuilder::with_capacity(n, n * 32);
        if is_integer(keys.data_type()) {
            let ints = as_int64(keys)?;
            let ints = ints.as_primitive::<Int64Type>();
            let rows = (0..n).map(|i| ints.is_valid(i).then(|| KeyRef::Int(ints.value(i))));
            self.fill(rows, &mut out);
        } else {
            let text = as_text(keys)?;
            let text = text.as_string::<i32>();
            let rows = (0..n).map(|i| text.is_valid(i).then(|| KeyRef::Text(text.value(i))));
            self.fill(rows, &mut out);
        }
        Ok(Arc::new(out.finish()))
    }

    fn fill<'k>(&self, rows: impl Iterator<Item = Option<KeyRef<'k>>>, out: &mut StringBuilder) {
        let mut seen: HashMap<KeyRef<'k>, [u8; 32]> = HashMap::new();
        // rows of one key usually come together: the last one is at hand
        let mut last: Option<(KeyRef<'k>, [u8; 32])> = None;
        for key in rows {
            let Some(key) = key else {
                out.append_null();
                continue;
            };
            let hex = match last {
                Some((k, hex)) if k == key => hex,
                _ => {
                    let hex = *seen.entry(key).or_insert_with(|| match key {
                        KeyRef::Int(k) => self.pseudonym_hex(&k.to_string()),
                        KeyRef::Text(k) => self.pseudonym_hex(k),
                    });
                    last = Some((key, hex));
                    hex
                }
            };
            out.append_value(std::str::from_utf8(&hex).expect("hex is ASCII"));
        }
    }
}

/// A key of one row, borrowed from its column.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum KeyRef<'a> {
    Int(i64),
    Text(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int32Array, StringArray};

    #[test]
    fn collects_sorted_distinct_selected_keys() {
        let keys: ArrayRef = Arc::new(Int32Array::from(vec![Some(5), Some(1), None, Some(5)]));
        let sel = BooleanArray::from(vec![Some(true), Some(true), Some(true), None]);
        let got = CohortKeys::collect(vec![(keys, sel)], &DataType::Int32).unwrap();
        assert_eq!(got, CohortKeys::Int(vec![1, 5]));
        let keys: ArrayRef = Arc::new(StringArray::from(vec!["b", "a", "b"]));
        let sel = BooleanArray::from(vec![true, true, true]);
        let got = CohortKeys::collect(vec![(keys, sel)], &DataType::Utf8).unwrap();
        assert_eq!(got, CohortKeys::Text(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn bitmap_and_set_agree() {
        let dense = CohortKeys::Int((0..1000).step_by(3).collect());
        let sparse = CohortKeys::Int(vec![-7, 3, 1 << 40]);
        let probe: ArrayRef = Arc::new(arrow_array::Int64Array::from(vec![
            Some(-7),
            Some(0),
            Some(3),
            Some(4),
            None,
            Some(999),
            Some(1 << 40),
        ]));
        let m = Membership::new(&dense);
        assert!(matches!(m, Membership::Bitmap { .. }));
        let got: Vec<bool> = m.mask(&probe).unwrap().iter().map(|b| b.unwrap()).collect();
        assert_eq!(got, [false, true, true, false, false, true, false]);
        let m = Membership::new(&sparse);
        assert!(matches!(m, Membership::IntSet { .. }));
        let got: Vec<bool> = m.mask(&probe).unwrap().iter().map(|b| b.unwrap()).collect();
        assert_eq!(got, [true, false, true, false, false, false, true]);
        assert!(!Membership::new(&dense).may_contain_range(1000, 2000));
        assert!(Membership::new(&dense).may_contain_range(-5, 0));
    }

    #[test]
    fn ranges_are_exact() {
        // two clumps with a gap, crossing word boundaries; dense and sparse
        let keys: Vec<i64> = (100..130).chain(300..301).chain(1000..1064).collect();
        let sparse: Vec<i64> = keys.iter().map(|k| k * 1_000_000).collect();
        for (keys, scale) in [(keys, 1), (sparse, 1_000_000)] {
            let m = Membership::new(&CohortKeys::Int(keys.clone()));
            for lo in (-70..1200).step_by(7) {
                for width in [0, 1, 5, 63, 64, 65, 200, 5000] {
                    let (lo, hi) = (lo * scale, (lo + width) * scale);
                    let truth = keys.iter().any(|k| (lo..=hi).contains(k));
                    assert_eq!(m.may_contain_range(lo, hi), truth, "[{lo}, {hi}] {m:?}");
                }
            }
        }
        assert!(matches!(
            Membership::new(&CohortKeys::Int((100..130).collect())),
            Membership::Bitmap { .. }
        ));
    }

    #[test]
    fn pseudonyms_are_per_project_and_stable() {
        let a = Pseudonymiser::new(&[1; 32]);
        let b = Pseudonymiser::new(&[2; 32]);
        assert_eq!(a.pseudonym("42"), a.pseudonym("42"));
        assert_ne!(a.pseudonym("42"), b.pseudonym("42"));
        assert_ne!(a.pseudonym("42"), a.pseudonym("43"));
        assert_eq!(a.pseudonym("42").len(), 32);
        let ints: ArrayRef = Arc::new(Int32Array::from(vec![Some(42), None]));
        let col = a.column(&ints).unwrap();
        let col = col.as_string::<i32>();
        assert_eq!(col.value(0), a.pseudonym("42"));
        assert!(col.is_null(1));
    }
}
