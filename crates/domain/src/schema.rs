//! What the API document states about values that this crate checks: the
//! JSON Schema patterns of names, free text and handles (each the exact
//! rule of the check it names), and sets given as JSON arrays whose items
//! must differ. An external fuzzer holds the two together: it sends values
//! that match each pattern and values that do not (`scripts/api-conformance`).

use std::collections::BTreeSet;

use serde::{Deserialize, Deserializer};

/// A name (`check_name`, environment names): no control character and at
/// least one character that is not white space.
pub const NAME: &str = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$";

/// Free text (`check_text`): no control character but tab and line breaks.
pub const TEXT: &str = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$";

/// Free text that is required: as [`TEXT`], and not blank.
pub const REQUIRED_TEXT: &str = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$";

/// A user's or a group's handle: 1 to 64 of `A-Z a-z 0-9 . _ - @`.
pub const HANDLE: &str = r"^[A-Za-z0-9._@-]{1,64}$";

/// Whether `handle` is a well-formed user or group handle ([`HANDLE`]).
pub fn is_handle(handle: &str) -> bool {
    (1..=64).contains(&handle.len())
        && handle
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// A set read from a JSON array, refusing an item given twice (the
/// document says `uniqueItems`): `["ann", "ann"]` is a mistake to report,
/// not a set of one.
pub fn unique<'de, D, T>(d: D) -> Result<BTreeSet<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Ord,
{
    let items = Vec::<T>::deserialize(d)?;
    let given = items.len();
    let set: BTreeSet<T> = items.into_iter().collect();
    if set.len() != given {
        return Err(serde::de::Error::custom(
            "an item is given twice: each must differ",
        ));
    }
    Ok(set)
}

/// [`unique`] for an optional set (`null` or absent: none).
pub fn unique_optional<'de, D, T>(d: D) -> Result<Option<BTreeSet<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Ord,
{
    #[derive(Deserialize)]
    #[serde(bound = "T: Deserialize<'de> + Ord")]
    struct Set<T: Ord>(#[serde(deserialize_with = "unique")] BTreeSet<T>);
    Ok(Option::<Set<T>>::deserialize(d)?.map(|s| s.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "unique")]
        names: BTreeSet<String>,
        #[serde(default, deserialize_with = "unique_optional")]
        maybe: Option<BTreeSet<u32>>,
    }

    #[test]
    fn sets_refuse_an_item_given_twice() {
        let ok: Body = serde_json::from_str(r#"{"names": ["b", "a"], "maybe": [1, 2]}"#).unwrap();
        assert_eq!(ok.names.len(), 2);
        assert_eq!(ok.maybe.map(|m| m.len()), Some(2));
        let none: Body = serde_json::from_str(r#"{"maybe": null}"#).unwrap();
        assert!(none.maybe.is_none() && none.names.is_empty());
        for twice in [r#"{"names": ["a", "a"]}"#, r#"{"maybe": [3, 3]}"#] {
            let err = serde_json::from_str::<Body>(twice).unwrap_err().to_string();
            assert!(err.contains("given twice"), "{err}");
        }
    }

    #[test]
    fn handles() {
        for good in ["ann", "a.b-c_d@x", &"x".repeat(64)] {
            assert!(is_handle(good), "{good}");
        }
        for bad in ["", "ann smith", "é", &"x".repeat(65), "a/b"] {
            assert!(!is_handle(bad), "{bad}");
        }
    }
}
