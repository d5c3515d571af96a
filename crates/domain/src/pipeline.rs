//! Review pipelines: ordered stages, each with reviewers and a decision rule.
//!
//! How a stage closes, for a stage with `n` current reviewers of whom `k` must
//! approve (`any`: k = 1, `all`: k = n, `quorum(q)`: k = q):
//! - a `reject` marked final by a current reviewer closes it at once as
//!   **rejected** (a veto: the request ends);
//! - `k` approvals close it as **approved** (the request moves to the next
//!   stage, or is approved after the last);
//! - once `k` approvals can no longer be reached (more than `n - k` votes
//!   against: `return`, or `reject` not marked final) it closes as
//!   **returned** (the request goes to `in_revision`);
//! - otherwise it stays open. A stage with no reviewers, or fewer than its
//!   quorum, stays open: it blocks rather than silently passing.
//!
//! Only votes of the stage's *current* reviewers count: reviewer changes after
//! publish apply to stages not yet decided. And only reviewers who may
//! decide count at all: a reviewer who owns or collaborates on the request
//! is left out of `n` ([`ReviewStage::eligible`]), so a quorum that only
//! their vote could reach is out of reach.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::inventory::check_name;
use crate::{DomainError, UserId};

/// How many approvals close a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionRule {
    /// One approval decides.
    Any,
    /// Every current reviewer must approve.
    All,
    /// At least this many approvals.
    Quorum(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewStage {
    /// Stable identifier, unique in the pipeline (e.g. `access-committee`).
    #[schemars(length(min = 1, max = 128), regex(pattern = crate::schema::NAME))]
    pub id: String,
    #[schemars(length(min = 1, max = 128), regex(pattern = crate::schema::NAME))]
    pub name: String,
    #[serde(deserialize_with = "crate::schema::unique")]
    pub reviewers: BTreeSet<UserId>,
    pub rule: DecisionRule,
}

impl ReviewStage {
    /// Approvals needed to pass with the current reviewers.
    pub fn approvals_needed(&self) -> usize {
        match self.rule {
            DecisionRule::Any => 1,
            DecisionRule::All => self.reviewers.len().max(1),
            DecisionRule::Quorum(k) => k as usize,
        }
    }

    /// Whether the stage can ever pass with its current reviewers.
    pub fn is_satisfiable(&self) -> bool {
        !self.reviewers.is_empty() && self.approvals_needed() <= self.reviewers.len()
    }

    /// The stage as it stands for one request: only the reviewers who may
    /// decide it (not `excluded`, its owner and collaborators). Tallying on
    /// this counts a quorum out of reach as soon as it is, instead of
    /// waiting for a vote that can never come.
    pub fn eligible(&self, excluded: impl Fn(&UserId) -> bool) -> Self {
        Self {
            reviewers: self
                .reviewers
                .iter()
                .filter(|r| !excluded(r))
                .cloned()
                .collect(),
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewPipeline {
    pub stages: Vec<ReviewStage>,
}

/// A stage as a decision names it: by its id (`"dac"`), or by its 0-based
/// index as the request's state shows it (`0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum StageRef {
    Index(usize),
    Id(String),
}

impl ReviewPipeline {
    /// The index of the stage `stage` names; `field` names it in the error.
    pub fn stage_index(&self, stage: &StageRef, field: &str) -> Result<usize, DomainError> {
        match stage {
            StageRef::Index(i) => Ok(*i),
            StageRef::Id(id) => self.stages.iter().position(|s| s.id == *id).ok_or_else(|| {
                let ids: Vec<&str> = self.stages.iter().map(|s| s.id.as_str()).collect();
                DomainError::invalid(
                    field,
                    format!("no stage {id:?}; the stages are {}", ids.join(", ")),
                )
            }),
        }
    }

    /// Checks that stage ids are unique and names and rules are well formed.
    /// Allowed in draft with missing reviewers; see [`Self::publish_problems`].
    pub fn validate(&self) -> Result<(), DomainError> {
        let mut ids = BTreeSet::new();
        for (i, stage) in self.stages.iter().enumerate() {
            let path = format!("pipeline.stages[{i}]");
            check_name(&format!("{path}.id"), &stage.id)?;
            check_name(&format!("{path}.name"), &stage.name)?;
            if !ids.insert(stage.id.as_str()) {
                return Err(DomainError::invalid(
                    format!("{path}.id"),
                    format!("duplicate stage id {:?}", stage.id),
                ));
            }
            if stage.rule == DecisionRule::Quorum(0) {
                return Err(DomainError::invalid(
                    format!("{path}.rule"),
                    "a quorum needs at least one approval",
                ));
            }
            // reviewers named, too few for the rule: said now, not at
            // publish (a stage may still be given its reviewers later)
            if !stage.reviewers.is_empty() && !stage.is_satisfiable() {
                return Err(DomainError::invalid(
                    format!("{path}.rule"),
                    format!(
                        "stage {:?} needs {} approvals but names {} reviewer(s): add reviewers or lower the quorum",
                        stage.id,
                        stage.approvals_needed(),
                        stage.reviewers.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// What publishing needs of the pipeline and it lacks, all of it: well
    /// formed, at least one stage, each with reviewers enough for its rule.
    pub fn publish_problems(&self) -> Vec<crate::Problem> {
        let problem = |field: String, message: String| crate::Problem { field, message };
        let mut problems = Vec::new();
        if let Err(e) = self.validate() {
            problems.push(problem(
                e.field().unwrap_or("pipeline").to_owned(),
                e.message(),
            ));
        }
        if self.stages.is_empty() {
            problems.push(problem(
                "pipeline.stages".to_owned(),
                "at least one review stage is required (PUT /v1/environments/{id}/pipeline)"
                    .to_owned(),
            ));
        }
        // (a stage's rule the check above refused already is named once)
        let stages = self.stages.iter().enumerate().filter_map(|(i, stage)| {
            if stage.reviewers.is_empty() {
                Some(problem(
                    format!("pipeline.stages[{i}].reviewers"),
                    format!("stage {:?} has no reviewers", stage.id),
                ))
            } else if !stage.is_satisfiable() {
                Some(problem(
                    format!("pipeline.stages[{i}].rule"),
                    format!(
                        "stage {:?} needs {} approvals but has {} reviewer(s)",
                        stage.id,
                        stage.approvals_needed(),
                        stage.reviewers.len()
                    ),
                ))
            } else {
                None
            }
        });
        crate::Problem::add_new(&mut problems, stages);
        problems
    }

    /// Same stages (ids, names, rules, order), whatever the reviewers: the
    /// structure that publishing freezes.
    pub fn same_structure(&self, other: &Self) -> bool {
        self.stages.len() == other.stages.len()
            && self
                .stages
                .iter()
                .zip(&other.stages)
                .all(|(a, b)| a.id == b.id && a.name == b.name && a.rule == b.rule)
    }

    /// Every user who reviews any stage.
    pub fn is_reviewer(&self, user: &UserId) -> bool {
        self.stages.iter().any(|s| s.reviewers.contains(user))
    }

    /// Who joins and leaves each stage (by index) going to `next`; stages
    /// whose reviewers stay the same are left out.
    pub fn reviewer_changes(&self, next: &Self) -> Vec<ReviewerChange> {
        self.stages
            .iter()
            .zip(&next.stages)
            .enumerate()
            .filter(|(_, (before, after))| before.reviewers != after.reviewers)
            .map(|(stage, (before, after))| ReviewerChange {
                stage,
                stage_id: after.id.clone(),
                added: after
                    .reviewers
                    .difference(&before.reviewers)
                    .cloned()
                    .collect(),
                removed: before
                    .reviewers
                    .difference(&after.reviewers)
                    .cloned()
                    .collect(),
            })
            .collect()
    }
}

/// How one stage's reviewers changed (see [`ReviewPipeline::reviewer_changes`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewerChange {
    pub stage: usize,
    pub stage_id: String,
    pub added: BTreeSet<UserId>,
    pub removed: BTreeSet<UserId>,
}

/// One reviewer's vote on a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    Approve,
    /// `return`, or `reject` not marked final.
    Against,
    /// `reject` marked final.
    Veto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageOutcome {
    Open,
    Approved,
    Returned,
    Rejected,
}

/// Decides a stage from the votes cast so far (see the module docs).
pub fn tally<'a>(
    stage: &ReviewStage,
    votes: impl IntoIterator<Item = (&'a UserId, Vote)>,
) -> StageOutcome {
    let (mut approvals, mut against) = (0usize, 0usize);
    for (reviewer, vote) in votes {
        if !stage.reviewers.contains(reviewer) {
            continue;
        }
        match vote {
            Vote::Veto => return StageOutcome::Rejected,
            Vote::Approve => approvals += 1,
            Vote::Against => against += 1,
        }
    }
    if !stage.is_satisfiable() {
        return StageOutcome::Open;
    }
    let needed = stage.approvals_needed();
    if approvals >= needed {
        StageOutcome::Approved
    } else if against > stage.reviewers.len() - needed {
        StageOutcome::Returned
    } else {
        StageOutcome::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(rule: DecisionRule, reviewers: &[&str]) -> ReviewStage {
        ReviewStage {
            id: "s".into(),
            name: "S".into(),
            reviewers: reviewers.iter().map(|r| UserId::from(*r)).collect(),
            rule,
        }
    }

    fn run(rule: DecisionRule, reviewers: &[&str], votes: &[(&str, Vote)]) -> StageOutcome {
        let ids: Vec<(UserId, Vote)> = votes.iter().map(|(u, v)| (UserId::from(*u), *v)).collect();
        tally(&stage(rule, reviewers), ids.iter().map(|(u, v)| (u, *v)))
    }

    use DecisionRule::*;
    use StageOutcome::*;
    use Vote::*;

    #[test]
    fn tally_table() {
        let abc = &["a", "b", "c"];
        type Case<'a> = (
            DecisionRule,
            &'a [&'a str],
            Vec<(&'a str, Vote)>,
            StageOutcome,
        );
        let cases: Vec<Case<'_>> = vec![
            (Any, abc, vec![], Open),
            (Any, abc, vec![("a", Approve)], Approved),
            (Any, abc, vec![("a", Against)], Open),
            (Any, abc, vec![("a", Against), ("b", Against)], Open),
            (
                Any,
                abc,
                vec![("a", Against), ("b", Against), ("c", Against)],
                Returned,
            ),
            (Any, abc, vec![("a", Against), ("b", Approve)], Approved),
            (Any, abc, vec![("a", Veto)], Rejected),
            (All, abc, vec![("a", Approve), ("b", Approve)], Open),
            (
                All,
                abc,
                vec![("a", Approve), ("b", Approve), ("c", Approve)],
                Approved,
            ),
            (All, abc, vec![("a", Approve), ("b", Against)], Returned),
            (All, abc, vec![("a", Approve), ("b", Veto)], Rejected),
            (Quorum(2), abc, vec![("a", Approve)], Open),
            (
                Quorum(2),
                abc,
                vec![("a", Approve), ("c", Approve)],
                Approved,
            ),
            (Quorum(2), abc, vec![("a", Against)], Open),
            (
                Quorum(2),
                abc,
                vec![("a", Against), ("b", Against)],
                Returned,
            ),
            (Quorum(2), abc, vec![("a", Against), ("b", Approve)], Open),
            (Quorum(2), abc, vec![("a", Veto), ("b", Approve)], Rejected),
            // votes of people who are no longer reviewers do not count
            (Any, abc, vec![("z", Approve)], Open),
            (Any, abc, vec![("z", Veto)], Open),
            // a stage that cannot pass blocks instead of passing
            (Any, &[], vec![("a", Approve)], Open),
            (
                Quorum(4),
                abc,
                vec![("a", Approve), ("b", Approve), ("c", Approve)],
                Open,
            ),
        ];
        for (rule, reviewers, votes, expected) in cases {
            assert_eq!(
                run(rule, reviewers, &votes),
                expected,
                "{rule:?} {reviewers:?} {votes:?}"
            );
        }
    }

    /// Attack on the pipeline: stage 2 is quorum(2) of three reviewers, and
    /// the third collaborates on the request. One returns it, one approves:
    /// two approvals are out of reach, so the stage closes as returned
    /// instead of waiting for ever on a vote that may never be cast.
    #[test]
    fn reviewers_who_may_not_decide_do_not_keep_a_stage_open() {
        let full = stage(Quorum(2), &["a", "b", "collab"]);
        let votes = [(UserId::from("a"), Against), (UserId::from("b"), Approve)];
        let counted = |s: &ReviewStage| tally(s, votes.iter().map(|(u, v)| (u, *v)));
        assert_eq!(counted(&full), Open, "counting the collaborator");
        let eligible = full.eligible(|u| u.as_str() == "collab");
        assert_eq!(eligible.reviewers.len(), 2);
        assert_eq!(counted(&eligible), Returned);
        // all: every eligible reviewer, not the collaborator too
        let all = stage(All, &["a", "collab"]).eligible(|u| u.as_str() == "collab");
        assert_eq!(tally(&all, [(&UserId::from("a"), Approve)]), Approved);
        // nobody eligible: blocked (the admins are alerted), never passed
        let nobody = stage(Any, &["collab"]).eligible(|u| u.as_str() == "collab");
        assert_eq!(tally(&nobody, []), Open);
    }

    #[test]
    fn publish_requires_reviewers_and_satisfiable_rules() {
        let empty = ReviewPipeline::default();
        assert_eq!(
            empty.publish_problems().first().map(|p| p.field.as_str()),
            Some("pipeline.stages")
        );
        let no_reviewers = ReviewPipeline {
            stages: vec![stage(Any, &[])],
        };
        assert_eq!(
            no_reviewers
                .publish_problems()
                .first()
                .map(|p| p.field.as_str()),
            Some("pipeline.stages[0].reviewers")
        );
        let quorum = ReviewPipeline {
            stages: vec![stage(Quorum(3), &["a", "b"])],
        };
        assert_eq!(
            quorum.publish_problems().first().map(|p| p.field.as_str()),
            Some("pipeline.stages[0].rule")
        );
        let zero = ReviewPipeline {
            stages: vec![stage(Quorum(0), &["a"])],
        };
        assert_eq!(
            zero.validate().unwrap_err().field(),
            Some("pipeline.stages[0].rule")
        );
        let dup = ReviewPipeline {
            stages: vec![stage(Any, &["a"]), stage(All, &["b"])],
        };
        assert_eq!(
            dup.validate().unwrap_err().field(),
            Some("pipeline.stages[1].id")
        );
    }

    #[test]
    fn structure_ignores_reviewers_only() {
        let a = ReviewPipeline {
            stages: vec![stage(Any, &["a"])],
        };
        let mut b = a.clone();
        b.stages[0].reviewers.insert(UserId::from("x"));
        assert!(a.same_structure(&b));
        b.stages[0].rule = All;
        assert!(!a.same_structure(&b));
        let mut c = a.clone();
        c.stages.push(stage(All, &["b"]));
        assert!(!a.same_structure(&c));
    }

    #[test]
    fn rule_serializes_as_documented() {
        assert_eq!(serde_json::to_string(&Any).unwrap(), "\"any\"");
        assert_eq!(serde_json::to_string(&Quorum(2)).unwrap(), "{\"quorum\":2}");
        let r: DecisionRule = serde_json::from_str("{\"quorum\":3}").unwrap();
        assert_eq!(r, Quorum(3));
    }
}
