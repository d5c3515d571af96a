//! Where data lives: the root of an environment's source data, and of the
//! project output store, as a folder or an S3 prefix; and the relative
//! locations of dataset files inside a source root.
//!
//! Each environment owns its source: a platform admin gives it a
//! [`StoreRoot`] when creating it, and every dataset location must stay
//! inside that root. Locations are checked here, as text, before they are
//! stored: relative, no `.` or `..` segments, no empty segments, no
//! backslashes and no percent signs (so no encoded separators). What text
//! cannot catch (a symbolic link out of a folder) the reader checks when it
//! opens the file.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// A folder (absolute, normalised) or an S3 bucket and prefix.
///
/// Written `/srv/biobank/release-7`, `file:///srv/biobank` or
/// `s3://bucket[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StoreRoot {
    /// An absolute folder on the machines that run tre's workers, without a
    /// trailing slash, never `/` itself.
    Folder(String),
    /// A bucket and a prefix (segments joined by `/`; empty for the whole
    /// bucket).
    S3 { bucket: String, prefix: String },
}

impl schemars::JsonSchema for StoreRoot {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StoreRoot".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "An absolute folder (`/srv/biobank`, `file:///srv/biobank`) or `s3://BUCKET[/PREFIX]`",
            "minLength": 2,
            // the shape the parser takes: an absolute folder, or a bucket
            // of 3-63 lowercase letters, digits, dots and hyphens (it also
            // refuses `..`, `%`, backslashes and control characters)
            "pattern": "^((file://)?/.+|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?)$",
        })
    }
}

const MAX_LOCATION: usize = 1024;

/// Checks one `/`-separated relative path, as written in an inventory or a
/// prefix: what the message says is wrong, if anything.
fn relative_path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("must not be empty");
    }
    if path.len() > MAX_LOCATION {
        return Some("must be at most 1024 bytes");
    }
    if path.starts_with('/') {
        return Some("must be relative to the environment's source root, not absolute");
    }
    if path.contains('\\') {
        return Some("must use / as the separator, never a backslash");
    }
    if path.contains('%') {
        return Some("must not contain percent signs (encoded characters)");
    }
    if path.chars().any(char::is_control) {
        return Some("must not contain control characters");
    }
    for segment in path.split('/') {
        match segment {
            "" => return Some("must not contain empty segments (// or a trailing /)"),
            "." | ".." => return Some("must not contain . or .. segments"),
            _ => {}
        }
    }
    None
}

/// Checks a dataset location: a relative object path that stays inside the
/// source root. `field` names it in the error.
pub fn check_location(field: &str, location: &str) -> Result<(), DomainError> {
    match relative_path_problem(location) {
        Some(problem) => Err(DomainError::invalid(field, problem)),
        None => Ok(()),
    }
}

impl StoreRoot {
    /// Parses and normalises a root; `field` names it in errors.
    pub fn parse(field: &str, text: &str) -> Result<Self, DomainError> {
        let invalid = |message: &str| DomainError::invalid(field, message);
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
            if !bucket_ok {
                return Err(invalid(
                    "s3://BUCKET: a bucket name is 3 to 63 lowercase letters, digits, dots and hyphens",
                ));
            }
            let prefix = prefix.trim_end_matches('/');
            if !prefix.is_empty()
                && let Some(problem) = relative_path_problem(prefix)
            {
                return Err(DomainError::invalid(field, format!("prefix {problem}")));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        if text.contains("://") && !text.starts_with("file://") {
            return Err(invalid(
                "expected an absolute folder, file:///PATH or s3://BUCKET[/PREFIX]",
            ));
        }
        let path = text.strip_prefix("file://").unwrap_or(text);
        if !path.starts_with('/') {
            return Err(invalid(
                "a folder must be absolute (the servers' working folder is not a place for data)",
            ));
        }
        if path.contains('\\') || path.contains('%') || path.chars().any(char::is_control) {
            return Err(invalid(
                "a folder must not contain backslashes, percent signs or control characters",
            ));
        }
        let mut segments = Vec::new();
        for segment in path.split('/') {
            match segment {
                "" | "." => {}
                ".." => return Err(invalid("a folder must not contain .. segments")),
                s => segments.push(s),
            }
        }
        if segments.is_empty() {
            return Err(invalid("the filesystem root cannot be a source root"));
        }
        Ok(Self::Folder(format!("/{}", segments.join("/"))))
    }

    /// Whether one of the two contains the other (or they are the same):
    /// a source root must never overlap the project output store. A folder
    /// and a bucket never overlap (tre cannot know which folder a server
    /// serves).
    pub fn overlaps(&self, other: &Self) -> bool {
        fn nested(a: &str, b: &str) -> bool {
            a == b
                || a.is_empty()
                || b.is_empty()
                || b.strip_prefix(a).is_some_and(|r| r.starts_with('/'))
                || a.strip_prefix(b).is_some_and(|r| r.starts_with('/'))
        }
        match (self, other) {
            (Self::Folder(a), Self::Folder(b)) => {
                nested(a.trim_start_matches('/'), b.trim_start_matches('/'))
            }
            (
                Self::S3 {
                    bucket: a,
                    prefix: pa,
                },
                Self::S3 {
                    bucket: b,
                    prefix: pb,
                },
            ) => a == b && nested(pa, pb),
            _ => false,
        }
    }
}

impl fmt::Display for StoreRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Folder(path) => f.write_str(path),
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl From<StoreRoot> for String {
    fn from(root: StoreRoot) -> Self {
        root.to_string()
    }
}

/// Deserialising names no field: the parser's path says where.
impl TryFrom<String> for StoreRoot {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse("", &text).map_err(|e| match e {
            DomainError::Invalid { message, .. } => message,
            other => other.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(s: &str) -> StoreRoot {
        StoreRoot::parse("source", s).unwrap()
    }

    #[test]
    fn roots_parse_and_normalise() {
        assert_eq!(
            root("/srv/bio//bank/./"),
            StoreRoot::Folder("/srv/bio/bank".into())
        );
        assert_eq!(
            root("file:///srv/bank"),
            StoreRoot::Folder("/srv/bank".into())
        );
        assert_eq!(
            root("s3://my-bucket/releases/7/"),
            StoreRoot::S3 {
                bucket: "my-bucket".into(),
                prefix: "releases/7".into()
            }
        );
        assert_eq!(root("s3://my-bucket").to_string(), "s3://my-bucket");
        assert_eq!(root("/srv/bank").to_string(), "/srv/bank");
        for bad in [
            "relative/folder",
            ".",
            "/",
            "//",
            "/srv/../etc",
            "gs://bucket",
            "s3://",
            "s3://Bad_Bucket",
            "s3://bucket/a/../b",
            "s3://bucket/a%2fb",
            "/srv/a%2f..",
            "C:\\data",
        ] {
            let err = StoreRoot::parse("source", bad).unwrap_err();
            assert_eq!(err.field(), Some("source"), "{bad}: {err}");
        }
    }

    #[test]
    fn serde_is_the_written_form() {
        let json = serde_json::to_string(&root("s3://bkt/a/b")).unwrap();
        assert_eq!(json, "\"s3://bkt/a/b\"");
        let back: StoreRoot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, root("s3://bkt/a/b"));
        assert!(serde_json::from_str::<StoreRoot>("\"../up\"").is_err());
    }

    #[test]
    fn overlap_is_nesting_either_way() {
        let table = [
            ("/srv/a", "/srv/a", true),
            ("/srv/a", "/srv/a/objects", true),
            ("/srv/a/objects", "/srv/a", true),
            ("/srv/a", "/srv/ab", false),
            ("/srv/a", "/srv/b", false),
            ("s3://bkt", "s3://bkt/x", true),
            ("s3://bkt/x", "s3://bkt/x/y", true),
            ("s3://bkt/x", "s3://bkt/xy", false),
            ("s3://bkt/x", "s3://other/x", false),
            ("/srv/a", "s3://bkt", false),
        ];
        for (a, b, overlap) in table {
            assert_eq!(root(a).overlaps(&root(b)), overlap, "{a} vs {b}");
        }
    }

    #[test]
    fn locations_stay_inside_the_root() {
        for ok in [
            "participants.parquet",
            "release-7/hes/part-0.parquet",
            "a b/c~d.parquet",
        ] {
            check_location("loc", ok).unwrap();
        }
        for bad in [
            "",
            "/etc/passwd",
            "../other/objects/p/data.parquet",
            "a/../../b",
            "a/./b",
            "a//b",
            "a/",
            "a\\..\\b",
            "..%2fother%2fx.parquet",
            "a\u{0}b",
        ] {
            let err = check_location("loc", bad).unwrap_err();
            assert_eq!(err.field(), Some("loc"), "{bad:?}: {err}");
        }
    }
}
