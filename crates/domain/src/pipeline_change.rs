//! A partial change of a review pipeline: the stages named, the fields
//! given, the rest as it is (`PATCH /v1/environments/{id}/pipeline`).
//! Adding, removing or reordering stages takes a full replacement (and only
//! in draft: a published pipeline's stages are frozen).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{DecisionRule, DomainError, ReviewPipeline, StageRef, UserId};

/// Changes to some stages of a pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelinePatch {
    pub stages: Vec<StagePatch>,
}

/// Changes to one stage, named by its id (or 0-based index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StagePatch {
    pub stage: StageRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = crate::schema::NAME))]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    #[serde(deserialize_with = "crate::schema::unique")]
    pub add_reviewers: BTreeSet<UserId>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    #[serde(deserialize_with = "crate::schema::unique")]
    pub remove_reviewers: BTreeSet<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<DecisionRule>,
}

impl PipelinePatch {
    /// The users the patch adds as reviewers (who must exist).
    pub fn added_reviewers(&self) -> impl Iterator<Item = &UserId> {
        self.stages.iter().flat_map(|s| s.add_reviewers.iter())
    }

    /// `pipeline` with the patch applied; errors name `stages[i]...`.
    pub fn apply(&self, pipeline: &ReviewPipeline) -> Result<ReviewPipeline, DomainError> {
        let mut next = pipeline.clone();
        let mut touched = BTreeSet::new();
        for (i, change) in self.stages.iter().enumerate() {
            let field = format!("stages[{i}]");
            let index = pipeline.stage_index(&change.stage, &format!("{field}.stage"))?;
            let Some(stage) = next.stages.get_mut(index) else {
                return Err(DomainError::invalid(
                    format!("{field}.stage"),
                    format!(
                        "no stage {index}: the pipeline has {} stage(s)",
                        pipeline.stages.len()
                    ),
                ));
            };
            if !touched.insert(index) {
                return Err(DomainError::invalid(
                    format!("{field}.stage"),
                    format!("stage {:?} is changed twice", stage.id),
                ));
            }
            if let Some(both) = change
                .add_reviewers
                .intersection(&change.remove_reviewers)
                .next()
            {
                return Err(DomainError::invalid(
                    format!("{field}.remove_reviewers"),
                    format!("{both} is both added and removed"),
                ));
            }
            if let Some(name) = &change.name {
                stage.name = name.clone();
            }
            stage.reviewers.extend(change.add_reviewers.iter().cloned());
            stage
                .reviewers
                .retain(|r| !change.remove_reviewers.contains(r));
            if let Some(rule) = change.rule {
                stage.rule = rule;
            }
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReviewStage;

    fn pipeline() -> ReviewPipeline {
        ReviewPipeline {
            stages: vec![
                ReviewStage {
                    id: "dac".into(),
                    name: "Committee".into(),
                    reviewers: BTreeSet::from(["carol".into()]),
                    rule: DecisionRule::Any,
                },
                ReviewStage {
                    id: "custodian".into(),
                    name: "Custodian".into(),
                    reviewers: BTreeSet::from(["dave".into(), "erin".into()]),
                    rule: DecisionRule::Quorum(2),
                },
            ],
        }
    }

    #[test]
    fn only_what_is_named_changes() {
        let patch: PipelinePatch = serde_json::from_value(serde_json::json!({
            "stages": [{"stage": "dac", "add_reviewers": ["bob"]},
                       {"stage": 1, "remove_reviewers": ["erin"], "rule": "any"}]
        }))
        .unwrap();
        let next = patch.apply(&pipeline()).unwrap();
        assert_eq!(next.stages[0].reviewers.len(), 2);
        assert_eq!(next.stages[0].name, "Committee", "kept");
        assert_eq!(next.stages[1].reviewers, BTreeSet::from(["dave".into()]));
        assert_eq!(next.stages[1].rule, DecisionRule::Any);
    }

    #[test]
    fn unknown_stages_and_contradictions_are_named() {
        for (patch, field) in [
            (
                serde_json::json!({"stages": [{"stage": "committee"}]}),
                "stages[0].stage",
            ),
            (
                serde_json::json!({"stages": [{"stage": 5}]}),
                "stages[0].stage",
            ),
            (
                serde_json::json!({"stages": [{"stage": "dac"}, {"stage": 0}]}),
                "stages[1].stage",
            ),
            (
                serde_json::json!({"stages": [{"stage": "dac", "add_reviewers": ["x"], "remove_reviewers": ["x"]}]}),
                "stages[0].remove_reviewers",
            ),
        ] {
            let patch: PipelinePatch = serde_json::from_value(patch).unwrap();
            let err = patch.apply(&pipeline()).unwrap_err();
            assert_eq!(err.field(), Some(field), "{err}");
        }
    }
}
