//! Bulk files: the per-participant files an environment holds besides its
//! tables (exome VCFs, MRI scans, wearable exports), and the rules a file
//! inventory must keep before any of it is stored.
//!
//! A **file inventory** is a manifest the admin uploads (a TSV) with one
//! row per file: the entity (participant) it belongs to, its file
//! collection (declared in the inventory, e.g. `exome_vcf`), its location
//! in the environment's source root, its size and, optionally, its SHA-256.
//! What can be checked from the text alone is checked here
//! ([`parse_tsv`], [`check_entries`]); whether each object exists with that
//! size and each entity is in the cohort dataset is checked by a durable
//! job that reads the source, which also computes missing checksums. Only
//! a manifest without a single bad row becomes part of an inventory
//! version ([`FileInventoryRef`]).
//!
//! In a project a file is written to `files/{collection}/{pseudonym}/{name}`
//! ([`project_object`]): the file's own name, with the participant's id
//! replaced wherever it appears as a token ([`rewrite_name`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use crate::DomainError;
use crate::inventory::check_name;
use crate::storage::check_location;

/// A kind of bulk file an inventory declares, e.g. `exome_vcf`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileCollection {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// The checked file inventory an inventory version holds: set by tre when
/// an uploaded manifest passes every check, never by the admin directly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileInventoryRef {
    /// The uploaded manifest's id (its rows are stored under it).
    pub id: String,
    pub files: u64,
    pub bytes: u64,
    /// Files and bytes per file collection, in name order.
    pub collections: Vec<FileCollectionCount>,
}

impl FileInventoryRef {
    pub fn collection(&self, name: &str) -> Option<&FileCollectionCount> {
        self.collections.iter().find(|c| c.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileCollectionCount {
    pub name: String,
    pub files: u64,
    pub bytes: u64,
}

/// One row of a file inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The entity key (participant id) as text.
    pub entity: String,
    pub collection: String,
    /// Relative to the environment's source root.
    pub location: String,
    pub size: u64,
    /// Lowercase hex; absent until computed.
    pub sha256: Option<String>,
}

impl FileEntry {
    /// The file's own name: the last segment of its location.
    pub fn name(&self) -> &str {
        file_name(&self.location)
    }
}

/// A bad row of a file inventory: its line in the manifest (the header is
/// line 1) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FileProblem {
    pub line: u64,
    pub message: String,
}

/// How many bad rows a rejection lists (the count says how many there were).
pub const MAX_PROBLEMS: usize = 20;

/// Bad rows, the first [`MAX_PROBLEMS`] of them, and how many in all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FileProblems {
    pub total: u64,
    pub first: Vec<FileProblem>,
}

impl FileProblems {
    pub fn push(&mut self, line: u64, message: impl Into<String>) {
        self.total += 1;
        if self.first.len() < MAX_PROBLEMS {
            self.first.push(FileProblem {
                line,
                message: message.into(),
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The problems as one validation error naming `field`: each distinct
    /// message once, with the lines it was found on (`lines 2-21: ...`), so
    /// that one mistake repeated on every row reads as one.
    pub fn to_error(&self, field: &str) -> DomainError {
        let mut grouped: Vec<(&str, Vec<u64>)> = Vec::new();
        for p in &self.first {
            match grouped.iter_mut().find(|(m, _)| *m == p.message) {
                Some((_, lines)) => lines.push(p.line),
                None => grouped.push((&p.message, vec![p.line])),
            }
        }
        let listed: Vec<String> = grouped
            .iter()
            .map(|(message, lines)| format!("{}: {message}", line_ranges(lines)))
            .collect();
        let more = match self.total as usize - self.first.len() {
            0 => String::new(),
            n => format!("; and {n} more"),
        };
        DomainError::invalid(
            field,
            format!(
                "{} bad row(s), nothing was stored: {}{more}",
                self.total,
                listed.join("; ")
            ),
        )
    }
}

/// `line 3`, or `lines 2-5, 9` for several (ascending, as found).
fn line_ranges(lines: &[u64]) -> String {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &line in lines {
        match ranges.last_mut() {
            Some((_, end)) if line == *end + 1 => *end = line,
            _ => ranges.push((line, line)),
        }
    }
    let text: Vec<String> = ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    if lines.len() == 1 {
        format!("line {}", text[0])
    } else {
        format!("lines {}", text.join(", "))
    }
}

/// The columns of a file inventory TSV, in any order; `sha256` may be left
/// out (or empty on a row) and is then computed.
pub const TSV_COLUMNS: [&str; 5] = ["entity", "collection", "location", "size", "sha256"];

/// Parses a tab-separated file inventory: a header naming the columns of
/// [`TSV_COLUMNS`], then one row per file. Blank lines are skipped. Rows
/// that cannot be read are problems (by line); nothing else is checked.
pub fn parse_tsv(text: &str) -> Result<Vec<(u64, FileEntry)>, FileProblems> {
    let mut problems = FileProblems::default();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i as u64 + 1, l));
    let Some((_, header)) = lines.next() else {
        problems.push(1, "the file inventory is empty: a header line is required");
        return Err(problems);
    };
    let header: Vec<&str> = header.trim_end_matches('\r').split('\t').collect();
    let column = |name: &str| header.iter().position(|h| h.trim() == name);
    let mut at = BTreeMap::new();
    for name in TSV_COLUMNS {
        match column(name) {
            Some(i) => {
                at.insert(name, i);
            }
            None if name == "sha256" => {}
            None => problems.push(1, format!("the header has no column {name:?}")),
        }
    }
    for (i, name) in header.iter().enumerate() {
        if !TSV_COLUMNS.contains(&name.trim()) {
            problems.push(1, format!("unknown column {name:?} (column {})", i + 1));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut entries = Vec::new();
    for (line, text) in lines {
        let text = text.trim_end_matches('\r');
        if text.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = text.split('\t').collect();
        if cells.len() != header.len() {
            problems.push(
                line,
                format!("{} cells, the header has {}", cells.len(), header.len()),
            );
            continue;
        }
        let cell = |name: &str| at.get(name).map(|&i| cells[i].trim()).unwrap_or("");
        let size = match cell("size").parse::<u64>() {
            Ok(size) => size,
            Err(_) => {
                problems.push(
                    line,
                    format!("size {:?} is not a number of bytes", cell("size")),
                );
                continue;
            }
        };
        let sha256 = Some(cell("sha256").to_ascii_lowercase()).filter(|s| !s.is_empty());
        entries.push((
            line,
            FileEntry {
                entity: cell("entity").to_owned(),
                collection: cell("collection").to_owned(),
                location: cell("location").to_owned(),
                size,
                sha256,
            },
        ));
    }
    if problems.is_empty() {
        Ok(entries)
    } else {
        Err(problems)
    }
}

/// Checks the rows of a file inventory against the file collections the
/// inventory declares: every entity given, every collection declared, every
/// location a plain relative path inside the source root and listed once, a
/// SHA-256 (when given) of 64 hex digits, and no two files of one entity in
/// one collection with the same name (they would land on one object).
pub fn check_entries(
    entries: &[(u64, FileEntry)],
    declared: &BTreeSet<&str>,
    problems: &mut FileProblems,
) {
    let mut locations: HashSet<&str> = HashSet::with_capacity(entries.len());
    let mut names: HashSet<(&str, &str, &str)> = HashSet::with_capacity(entries.len());
    for (line, entry) in entries {
        let line = *line;
        if entry.entity.is_empty() {
            problems.push(line, "entity is empty");
        } else if entry.entity.chars().any(|c| c.is_control() || c == '/') {
            problems.push(line, "entity must not contain control characters or /");
        }
        if !declared.contains(entry.collection.as_str()) {
            problems.push(
                line,
                format!(
                    "unknown file collection {:?} (the inventory declares {})",
                    entry.collection,
                    declared_list(declared)
                ),
            );
        }
        if let Err(e) = check_location("location", &entry.location) {
            problems.push(
                line,
                format!("location {:?}: {}", entry.location, message(e)),
            );
            continue;
        }
        if !locations.insert(entry.location.as_str()) {
            problems.push(line, format!("duplicate location {:?}", entry.location));
        } else if !names.insert((
            entry.entity.as_str(),
            entry.collection.as_str(),
            entry.name(),
        )) {
            problems.push(
                line,
                format!(
                    "another file of the same entity in {:?} is also named {:?}",
                    entry.collection,
                    entry.name()
                ),
            );
        }
        if let Some(sha) = &entry.sha256
            && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            problems.push(line, "sha256 must be 64 hexadecimal digits");
        }
    }
}

fn declared_list(declared: &BTreeSet<&str>) -> String {
    if declared.is_empty() {
        "none".to_owned()
    } else {
        declared
            .iter()
            .map(|d| format!("{d:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn message(e: DomainError) -> String {
    match e {
        DomainError::Invalid { message, .. } => message,
        other => other.to_string(),
    }
}

/// The last segment of a location.
pub fn file_name(location: &str) -> &str {
    location.rsplit('/').next().unwrap_or(location)
}

/// `name` with every occurrence of `entity` as a token replaced by
/// `replacement`. A token occurrence is one not flanked by a character of
/// its own kind: for a numeric id, by a digit (`1000017_23143.cram` holds
/// `1000017`, `21000017.vcf` does not); for any other id, by a letter or
/// digit. Case is kept as written: ids are compared exactly.
pub fn rewrite_name(name: &str, entity: &str, replacement: &str) -> String {
    if entity.is_empty() {
        return name.to_owned();
    }
    let numeric = entity.bytes().all(|b| b.is_ascii_digit());
    let joins = |c: char| {
        if numeric {
            c.is_ascii_digit()
        } else {
            c.is_alphanumeric()
        }
    };
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    let mut before: Option<char> = None;
    while let Some(at) = rest.find(entity) {
        let (head, tail) = rest.split_at(at);
        let prev = head.chars().next_back().or(before);
        let next = tail[entity.len()..].chars().next();
        out.push_str(head);
        if prev.is_some_and(joins) || next.is_some_and(joins) {
            // not a token: keep its first character and look again after it
            let first = tail.chars().next().expect("a match is not empty");
            out.push(first);
            before = Some(first);
            rest = &tail[first.len_utf8()..];
        } else {
            out.push_str(replacement);
            before = entity.chars().next_back();
            rest = &tail[entity.len()..];
        }
    }
    out.push_str(rest);
    out
}

/// Where a file lands in a project, relative to its prefix:
/// `files/{collection}/{label}/{name}`, where `label` is the participant's
/// pseudonym (or id, when the environment does not pseudonymise) and the
/// name is rewritten with it.
pub fn project_object(collection: &str, entity: &str, label: &str, location: &str) -> String {
    format!(
        "files/{collection}/{label}/{}",
        rewrite_name(file_name(location), entity, label)
    )
}

/// Checks the declared file collections; `path` is `inventory`.
pub(crate) fn check_declared(
    path: &str,
    declared: &[FileCollection],
    tables: &BTreeSet<&str>,
) -> Result<(), DomainError> {
    let mut names = BTreeSet::new();
    for (i, collection) in declared.iter().enumerate() {
        let field = format!("{path}.file_collections[{i}].name");
        check_name(&field, &collection.name)?;
        crate::request::check_text(
            &format!("{path}.file_collections[{i}].description"),
            &collection.description,
            crate::request::MAX_TEXT,
            false,
        )?;
        if collection.name.contains('/') {
            return Err(DomainError::invalid(field, "must not contain /"));
        }
        if !names.insert(collection.name.as_str()) {
            return Err(DomainError::invalid(
                field,
                format!("duplicate file collection {:?}", collection.name),
            ));
        }
        if tables.contains(collection.name.as_str()) {
            return Err(DomainError::invalid(
                field,
                format!("{:?} is also a dataset's name", collection.name),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn declared() -> BTreeSet<&'static str> {
        BTreeSet::from(["exome_vcf", "brain_mri"])
    }

    fn checked(tsv: &str) -> Result<Vec<(u64, FileEntry)>, FileProblems> {
        let entries = parse_tsv(tsv)?;
        let mut problems = FileProblems::default();
        check_entries(&entries, &declared(), &mut problems);
        if problems.is_empty() {
            Ok(entries)
        } else {
            Err(problems)
        }
    }

    #[test]
    fn a_good_manifest_parses_in_any_column_order_with_or_without_checksums() {
        let tsv = format!(
            "location\tentity\tsize\tcollection\tsha256\r\n\
             exome/1000017_23143.vcf.gz\t1000017\t120\texome_vcf\t{}\n\
             \n\
             mri/1000018/T1.nii.gz\t1000018\t0\tbrain_mri\t\n",
            SHA.to_uppercase()
        );
        let entries = checked(&tsv).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0, 2);
        assert_eq!(entries[0].1.sha256.as_deref(), Some(SHA), "lowercased");
        assert_eq!(entries[1].0, 4, "lines count the blank one");
        assert_eq!(entries[1].1.sha256, None);
        assert_eq!(entries[1].1.name(), "T1.nii.gz");
        let without = "entity\tcollection\tlocation\tsize\n1\texome_vcf\ta.vcf\t3\n";
        assert_eq!(checked(without).unwrap()[0].1.sha256, None);
    }

    /// Attack: every kind of bad row is refused, each named by its line,
    /// and one bad row refuses the whole manifest.
    #[test]
    fn every_bad_row_is_named_by_line() {
        let rows = [
            ("1\texome_vcf\ta.vcf\tbig", "size \"big\" is not a number"),
            ("1\tscans\tb.vcf\t1", "unknown file collection \"scans\""),
            ("\texome_vcf\tc.vcf\t1", "entity is empty"),
            (
                "1\texome_vcf\t../other/x.vcf\t1",
                "location \"../other/x.vcf\"",
            ),
            ("1\texome_vcf\t/etc/passwd\t1", "location \"/etc/passwd\""),
            ("1\texome_vcf\ta%2f..%2fx\t1", "percent"),
            ("1\texome_vcf\tgood.vcf\t1\textra", "5 cells"),
        ];
        for (row, expected) in rows {
            let tsv =
                format!("entity\tcollection\tlocation\tsize\nok\texome_vcf\tok.vcf\t1\n{row}\n");
            let problems = checked(&tsv).unwrap_err();
            assert_eq!(problems.total, 1, "{row}: {problems:?}");
            assert_eq!(problems.first[0].line, 3, "{row}");
            assert!(
                problems.first[0].message.contains(expected),
                "{row}: {problems:?}"
            );
        }
        let dup =
            "entity\tcollection\tlocation\tsize\n1\texome_vcf\ta.vcf\t1\n2\texome_vcf\ta.vcf\t1\n";
        let problems = checked(dup).unwrap_err();
        assert!(
            problems.first[0].message.contains("duplicate location"),
            "{problems:?}"
        );
        let same_name = "entity\tcollection\tlocation\tsize\n1\texome_vcf\tx/a.vcf\t1\n1\texome_vcf\ty/a.vcf\t1\n";
        let problems = checked(same_name).unwrap_err();
        assert!(
            problems.first[0].message.contains("also named"),
            "{problems:?}"
        );
        let bad_sha = "entity\tcollection\tlocation\tsize\tsha256\n1\texome_vcf\ta.vcf\t1\tabc\n";
        assert!(
            checked(bad_sha).unwrap_err().first[0]
                .message
                .contains("64 hexadecimal")
        );
        for header in [
            "",
            "entity\tcollection\tsize\n",
            "entity\tcollection\tlocation\tsize\towner\n",
        ] {
            let problems = parse_tsv(header).unwrap_err();
            assert_eq!(problems.first[0].line, 1, "{header:?}: {problems:?}");
        }
    }

    #[test]
    fn problems_are_capped_and_counted() {
        let mut tsv = String::from("entity\tcollection\tlocation\tsize\n");
        for i in 0..50 {
            tsv.push_str(&format!("{i}\tnope\tf{i}.vcf\t1\n"));
        }
        let problems = checked(&tsv).unwrap_err();
        assert_eq!(problems.total, 50);
        assert_eq!(problems.first.len(), MAX_PROBLEMS);
        let err = problems.to_error("files").to_string();
        // one mistake on every row reads as one
        assert_eq!(
            err,
            "files: 50 bad row(s), nothing was stored: lines 2-21: unknown file collection \"nope\" (the inventory declares \"brain_mri\", \"exome_vcf\"); and 30 more"
        );
    }

    #[test]
    fn ids_are_rewritten_as_tokens_only() {
        let p = "a1b2";
        let cases = [
            ("1000017_23143_0_0.cram", "1000017", "a1b2_23143_0_0.cram"),
            ("sub-1000017_T1w.nii.gz", "1000017", "sub-a1b2_T1w.nii.gz"),
            ("1000017.1000017.vcf", "1000017", "a1b2.a1b2.vcf"),
            ("21000017.vcf", "1000017", "21000017.vcf"),
            ("10000170.vcf", "1000017", "10000170.vcf"),
            ("x_12_2012.vcf", "12", "x_a1b2_2012.vcf"),
            ("P012_scan.dcm", "P012", "a1b2_scan.dcm"),
            ("XP012.dcm", "P012", "XP012.dcm"),
            ("data.csv", "42", "data.csv"),
        ];
        for (name, entity, want) in cases {
            assert_eq!(rewrite_name(name, entity, p), want, "{name} / {entity}");
        }
        assert_eq!(
            project_object(
                "exome_vcf",
                "1000017",
                p,
                "raw/1000017/1000017_23143.vcf.gz"
            ),
            "files/exome_vcf/a1b2/a1b2_23143.vcf.gz"
        );
    }
}
