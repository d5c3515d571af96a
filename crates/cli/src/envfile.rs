//! Environment definition files (TOML or JSON): what an admin writes to
//! create or configure an environment. The `inventory` is the same model
//! as the API's (`tre_domain::InventoryDefinition`, documented in
//! `docs/environments.md`), checked against the source the same way: the
//! fields a dataset declares are what it publishes, their types read from
//! the Parquet files when left out.
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
//! showcase = [{ dataset = "participants", field = "sex" }]
//! [[inventory.datasets]]
//! name = "participants"
//! key = "participant_id"
//! locations = ["participants.parquet"]   # relative to the source root
//! fields = [
//!   { name = "sex", description = "Sex recorded at recruitment" },
//!   { name = "age_at_recruitment", type = "integer" },
//! ]
//! [[inventory.collections]]
//! name = "demographics"
//! fields = [{ dataset = "participants", field = "sex" }]
//! [[pipeline.stages]]
//! id = "committee"
//! name = "Access committee"
//! reviewers = ["carol"]
//! rule = "any"          # or "all", or { quorum = 2 }
//! ```

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use tre_dispense::Source;
use tre_domain::{
    EnvironmentCommand, Inventory, InventoryDefinition, NewEnvironment, Policies, Principal,
    ReviewPipeline, StoreRoot, UserId, Visibility,
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
    pub inventory: Option<InventoryDefinition>,
    pub pipeline: Option<ReviewPipeline>,
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
    /// visibility. The inventory is resolved against `source`, the
    /// environment's source (see [`tre_dispense::schema::resolve_inventory`]).
    pub async fn commands(
        &self,
        source: &Source,
        creating: bool,
    ) -> Result<Vec<EnvironmentCommand>> {
        let inventory = match &self.inventory {
            None => None,
            Some(definition) => Some(
                tre_dispense::schema::resolve_inventory(source, definition)
                    .await
                    .map_err(|problems| {
                        anyhow!("the inventory does not hold:\n{}", crate::listed(&problems))
                    })?,
            ),
        };
        self.commands_with(inventory, creating)
    }

    /// [`EnvironmentFile::commands`] with the inventory already resolved.
    pub fn commands_with(
        &self,
        inventory: Option<Inventory>,
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
        if let Some(inventory) = inventory {
            commands.push(EnvironmentCommand::SetInventory(inventory));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo's definition resolves against its data, every column of
    /// the files declared (what it publishes is all it holds).
    #[tokio::test]
    async fn the_fixture_declares_every_column_of_its_files() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
        let file = EnvironmentFile::read(&root.join("environments/biobank.toml")).unwrap();
        let source = Source::folder(std::fs::canonicalize(root.join("data")).unwrap()).unwrap();
        let definition = file.inventory.as_ref().unwrap();
        let inventory = tre_dispense::schema::resolve_inventory(&source, definition)
            .await
            .unwrap_or_else(|p| panic!("{}", crate::listed(&p)));
        for dataset in &inventory.datasets {
            let columns = tre_dispense::schema::source_fields(&source, &dataset.locations[0])
                .await
                .unwrap();
            let undeclared: Vec<_> = columns
                .iter()
                .filter(|c| dataset.field(&c.name).is_none())
                .map(|c| c.name.as_str())
                .collect();
            assert!(undeclared.is_empty(), "{}: {undeclared:?}", dataset.name);
        }
    }

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
