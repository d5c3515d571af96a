//! Environment definition files (TOML or JSON): what an admin writes to
//! create or configure an environment. Dataset fields and their types are
//! read from the Parquet files themselves, so the file cannot drift from the
//! data; it only adds descriptions.
//!
//! ```toml
//! name = "Synthetic Biobank"
//! source = "../data"    # the source root: a folder (relative to this file) or s3://BUCKET/PREFIX
//! admins = ["custodian"]
//! members = [{ group = "researchers" }, { user = "alice" }]
//! visibility = "private"
//! [policies]
//! min_cell_size = 10
//! [inventory]
//! cohort_dataset = "participants"
//! showcase = ["participants.sex"]
//! [[inventory.datasets]]
//! name = "participants"
//! key = "participant_id"
//! locations = ["participants.parquet"]   # relative to the source root
//! [[inventory.collections]]
//! name = "demographics"
//! fields = ["participants.sex", "participants.age_at_recruitment"]
//! [[pipeline.stages]]
//! id = "committee"
//! name = "Access committee"
//! reviewers = ["carol"]
//! rule = "any"          # or "all", or { quorum = 2 }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use tre_dispense::Source;
use tre_domain::{
    DataCollection, Dataset, EnvironmentCommand, Field, FieldRef, Inventory, NewEnvironment,
    Policies, Principal, ReviewPipeline, StoreRoot, UserId, Visibility,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentFile {
    /// Required to create; ignored when configuring.
    pub name: Option<String>,
    /// The source root (required to create, unless given on the command
    /// line; a platform admin's choice, never changed by configuring): an
    /// absolute folder, a folder relative to this file, or
    /// `s3://BUCKET[/PREFIX]`.
    pub source: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub admins: Option<BTreeSet<UserId>>,
    pub members: Option<BTreeSet<Principal>>,
    pub visibility: Option<Visibility>,
    pub policies: Option<Policies>,
    pub inventory: Option<InventoryFile>,
    pub pipeline: Option<ReviewPipeline>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryFile {
    pub cohort_dataset: String,
    pub datasets: Vec<DatasetFile>,
    #[serde(default)]
    pub collections: Vec<CollectionFile>,
    /// `dataset.field` names.
    #[serde(default)]
    pub showcase: Vec<String>,
    /// Fields of the cohort dataset that cohort filters may use (default:
    /// the showcase's and the selected collections').
    #[serde(default)]
    pub cohort_fields: Option<Vec<String>>,
    /// The custodian's bins for numeric and date showcase fields:
    /// `[{field = "participants.bmi", edges = [18.5, 25, 30, 35]}]`.
    #[serde(default)]
    pub showcase_bins: Vec<BinsFile>,
    /// The kinds of bulk files: `[{name = "ecg", description = "..."}]`;
    /// their files come in a file inventory (`tre env files`).
    #[serde(default)]
    pub file_collections: Vec<tre_domain::files::FileCollection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinsFile {
    /// `dataset.field`
    pub field: String,
    pub edges: Vec<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetFile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub key: String,
    pub locations: Vec<String>,
    /// Optional descriptions by field name.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionFile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `dataset.field` names.
    #[serde(default)]
    pub fields: Vec<String>,
    /// File collection names (of `inventory.file_collections`).
    #[serde(default)]
    pub files: Vec<String>,
}

impl EnvironmentFile {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a valid environment file", path.display()))
        } else {
            toml::from_str(&text)
                .with_context(|| format!("{} is not a valid environment file", path.display()))
        }
    }

    /// What creating the environment takes. The source root is `source`
    /// (a folder relative to the working directory) when given, else the
    /// file's own (a folder relative to `file`'s).
    pub fn new_environment(&self, file: &Path, source: Option<&str>) -> Result<NewEnvironment> {
        let (text, base) = match (source, &self.source) {
            (Some(flag), _) => (flag, Path::new(".")),
            (None, Some(own)) => (own.as_str(), file.parent().unwrap_or(Path::new("."))),
            (None, None) => {
                bail!("source: required to create an environment (where its data lives)")
            }
        };
        let root =
            if text.starts_with("s3://") || text.starts_with("file://") || text.starts_with('/') {
                text.to_owned()
            } else {
                let folder = base.join(text);
                let folder = std::fs::canonicalize(&folder)
                    .with_context(|| format!("source: {}", folder.display()))?;
                folder
                    .to_str()
                    .ok_or_else(|| anyhow!("source: not a UTF-8 path"))?
                    .to_owned()
            };
        Ok(NewEnvironment {
            name: self
                .name
                .clone()
                .ok_or_else(|| anyhow!("name: required to create an environment"))?,
            description: self.description.clone().unwrap_or_default(),
            admins: self.admins.clone().unwrap_or_default(),
            source: StoreRoot::parse("source", &root).map_err(|e| anyhow!("{e}"))?,
        })
    }

    /// The configuration commands the file asks for, in an order that works
    /// for a draft: details, admins, members, policies, inventory, pipeline,
    /// visibility. Dataset fields are read from the files' footers in
    /// `source`, the environment's source.
    pub async fn commands(
        &self,
        source: &Source,
        creating: bool,
    ) -> Result<Vec<EnvironmentCommand>> {
        if !creating && self.source.is_some() {
            bail!(
                "source: an environment's source root is set when a platform admin creates it; configuring cannot change it"
            );
        }
        let mut commands = Vec::new();
        if !creating && (self.name.is_some() || self.description.is_some()) {
            commands.push(EnvironmentCommand::UpdateDetails {
                name: self.name.clone(),
                description: self.description.clone(),
            });
        }
        if let (false, Some(admins)) = (creating, &self.admins) {
            commands.push(EnvironmentCommand::SetAdmins(admins.clone()));
        }
        if let Some(members) = &self.members {
            commands.push(EnvironmentCommand::SetMembers(members.clone()));
        }
        if let Some(policies) = &self.policies {
            commands.push(EnvironmentCommand::SetPolicies(policies.clone()));
        }
        if let Some(inventory) = &self.inventory {
            commands.push(EnvironmentCommand::SetInventory(
                inventory.build(source).await?,
            ));
        }
        if let Some(pipeline) = &self.pipeline {
            commands.push(EnvironmentCommand::SetPipeline(pipeline.clone()));
        }
        if let Some(visibility) = self.visibility {
            commands.push(EnvironmentCommand::SetVisibility(visibility));
        }
        Ok(commands)
    }
}

fn field_ref(path: &str, name: &str) -> Result<FieldRef> {
    let (dataset, field) = name
        .split_once('.')
        .ok_or_else(|| anyhow!("{path}: expected \"dataset.field\", got {name:?}"))?;
    Ok(FieldRef {
        dataset: dataset.into(),
        field: field.into(),
    })
}

impl InventoryFile {
    pub async fn build(&self, source: &Source) -> Result<Inventory> {
        let mut datasets = Vec::new();
        for (i, d) in self.datasets.iter().enumerate() {
            let mut schema: Option<Vec<Field>> = None;
            for (j, location) in d.locations.iter().enumerate() {
                tre_domain::storage::check_location(
                    &format!("inventory.datasets[{i}].locations[{j}]"),
                    location,
                )?;
                let fields = tre_dispense::schema::source_fields(source, location)
                    .await
                    .with_context(|| format!("inventory.datasets[{i}].locations: {location}"))?;
                match &schema {
                    None => schema = Some(fields),
                    Some(first) if *first != fields => bail!(
                        "inventory.datasets[{i}].locations: {location} has a different schema from {}",
                        d.locations[0]
                    ),
                    Some(_) => {}
                }
            }
            let schema = schema.unwrap_or_default();
            if let Some(unknown) = d
                .fields
                .keys()
                .find(|k| !schema.iter().any(|f| f.name == **k))
            {
                bail!("inventory.datasets[{i}].fields: {unknown:?} is not a column of the dataset");
            }
            datasets.push(Dataset {
                name: d.name.clone(),
                description: d.description.clone(),
                locations: d.locations.clone(),
                key: d.key.clone(),
                fields: schema
                    .into_iter()
                    .map(|f| Field {
                        description: d.fields.get(&f.name).cloned().unwrap_or_default(),
                        ..f
                    })
                    .collect(),
            });
        }
        let collections = self
            .collections
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Ok(DataCollection {
                    name: c.name.clone(),
                    description: c.description.clone(),
                    fields: c
                        .fields
                        .iter()
                        .map(|f| field_ref(&format!("inventory.collections[{i}].fields"), f))
                        .collect::<Result<_>>()?,
                    files: c.files.clone(),
                })
            })
            .collect::<Result<_>>()?;
        let showcase = self
            .showcase
            .iter()
            .map(|f| field_ref("inventory.showcase", f))
            .collect::<Result<_>>()?;
        let inventory = Inventory {
            version: 0,
            datasets,
            cohort_dataset: self.cohort_dataset.clone(),
            collections,
            showcase,
            cohort_fields: self.cohort_fields.clone(),
            showcase_bins: self
                .showcase_bins
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    Ok(tre_domain::ShowcaseBins {
                        field: field_ref(&format!("inventory.showcase_bins[{i}].field"), &b.field)?,
                        edges: b.edges.iter().map(|e| tre_domain::BinEdge(*e)).collect(),
                    })
                })
                .collect::<Result<_>>()?,
            file_collections: self.file_collections.clone(),
            files: None,
        };
        inventory.validate()?;
        Ok(inventory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile definition files: the fixture's file with lines dropped,
    /// repeated, cut short and mixed with noise (a fixed seed). Parsing and
    /// making the new environment never panic; every refusal is an error.
    #[test]
    fn mangled_definition_files_never_panic() {
        let fixture = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/environments/biobank.toml"),
        )
        .unwrap();
        let lines: Vec<&str> = fixture.lines().collect();
        let noise = [
            "[[inventory.datasets]]",
            "name = \"\"",
            "source = \"s3://\"",
            "[policies]",
            "min_cell_size = -1",
            "rule = { quorum = 99999999999 }",
            "\u{0}",
            "files = [1]",
            "fields = \"x\"",
            "[",
            "key = [",
            "admins = [\"a\", \"a\"]",
            "visibility = \"secret\"",
        ];
        let mut seed = 20_261_202u64;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % n.max(1)
        };
        let (mut parsed, mut refused) = (0, 0);
        for _ in 0..3_000 {
            // one to three mutations of the fixture
            let mut mangled: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
            for _ in 0..1 + next(3) {
                let at = next(mangled.len());
                match next(4) {
                    0 => {
                        mangled.remove(at);
                    }
                    1 => {
                        let line = mangled[at].clone();
                        mangled.insert(at, line);
                    }
                    2 => {
                        let keep = next(mangled[at].chars().count() + 1);
                        mangled[at] = mangled[at].chars().take(keep).collect();
                    }
                    _ => mangled.insert(at, noise[next(noise.len())].to_owned()),
                }
            }
            let text = mangled.join("\n");
            match toml::from_str::<EnvironmentFile>(&text) {
                Ok(file) => {
                    parsed += 1;
                    let _ = file.new_environment(Path::new("/tmp/x.toml"), Some("/srv/bio"));
                }
                Err(e) => {
                    refused += 1;
                    assert!(!e.to_string().is_empty());
                }
            }
        }
        assert!(parsed > 10 && refused > 10, "{parsed} / {refused}");
    }
}
