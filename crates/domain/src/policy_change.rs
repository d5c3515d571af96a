//! Changing a custodian's policies: a partial change ([`PoliciesPatch`],
//! the fields given, the rest as they were) and which changes loosen what
//! the environment protects ([`Policies::loosenings`]), which are audited
//! and told to the environment's other admins.

use serde::{Deserialize, Serialize};

use crate::disclosure::ZeroCells;
use crate::{DownloadPolicy, Policies};

/// A partial change of an environment's policies: each field given is set,
/// every other keeps its value (`review_sla_hours: null` turns reminders
/// off). See [`Policies`] for what each means.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoliciesPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pseudonymise: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_cell_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3650))]
    pub max_request_days: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[schemars(range(min = 1))]
    pub review_sla_hours: Option<Option<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1_000_000))]
    pub min_cohort_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub rounding_base: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zero_cells: Option<ZeroCells>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000))]
    pub showcase_queries_per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<DownloadPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1440))]
    pub access_url_minutes: Option<u32>,
}

/// A field given as `null` is present (Some(None)); one left out is not.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl PoliciesPatch {
    /// `policies` with this change made (not yet validated).
    pub fn apply(&self, policies: &Policies) -> Policies {
        let mut next = policies.clone();
        macro_rules! set {
            ($($field:ident),*) => {
                $(if let Some(value) = &self.$field {
                    next.$field = value.clone();
                })*
            };
        }
        set!(
            pseudonymise,
            min_cell_size,
            max_request_days,
            review_sla_hours,
            min_cohort_size,
            rounding_base,
            zero_cells,
            showcase_queries_per_minute,
            download,
            access_url_minutes
        );
        next
    }

    /// Whether it changes nothing at all.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One policy changed so that the environment protects less: a smaller
/// minimum cell or cohort size, a finer rounding, zero cells shown, more
/// showcase queries a minute, keys no longer pseudonymised, longer access,
/// wider downloads or longer-lived access URLs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Loosening {
    /// The policy's name, as in [`Policies`].
    pub policy: String,
    pub from: serde_json::Value,
    pub to: serde_json::Value,
}

fn download_rank(d: DownloadPolicy) -> u8 {
    match d {
        DownloadPolicy::Forbidden => 0,
        DownloadPolicy::Workspace => 1,
        DownloadPolicy::Members => 2,
    }
}

impl Policies {
    /// The changes from these policies to `after` that loosen them, in the
    /// order of [`Policies`]' fields. (A review reminder is no protection:
    /// changing it is not a loosening.)
    pub fn loosenings(&self, after: &Policies) -> Vec<Loosening> {
        let mut out = Vec::new();
        let mut note = |policy: &str, loosened: bool, from: serde_json::Value, to| {
            if loosened {
                out.push(Loosening {
                    policy: policy.to_owned(),
                    from,
                    to,
                });
            }
        };
        use serde_json::json;
        note(
            "pseudonymise",
            self.pseudonymise && !after.pseudonymise,
            json!(self.pseudonymise),
            json!(after.pseudonymise),
        );
        note(
            "min_cell_size",
            after.min_cell_size < self.min_cell_size,
            json!(self.min_cell_size),
            json!(after.min_cell_size),
        );
        note(
            "max_request_days",
            after.max_request_days > self.max_request_days,
            json!(self.max_request_days),
            json!(after.max_request_days),
        );
        note(
            "min_cohort_size",
            after.min_cohort_size < self.min_cohort_size,
            json!(self.min_cohort_size),
            json!(after.min_cohort_size),
        );
        note(
            "rounding_base",
            after.rounding_base < self.rounding_base,
            json!(self.rounding_base),
            json!(after.rounding_base),
        );
        note(
            "zero_cells",
            self.zero_cells == ZeroCells::Suppress && after.zero_cells == ZeroCells::Show,
            json!(self.zero_cells),
            json!(after.zero_cells),
        );
        note(
            "showcase_queries_per_minute",
            after.showcase_queries_per_minute > self.showcase_queries_per_minute,
            json!(self.showcase_queries_per_minute),
            json!(after.showcase_queries_per_minute),
        );
        note(
            "download",
            download_rank(after.download) > download_rank(self.download),
            json!(self.download),
            json!(after.download),
        );
        note(
            "access_url_minutes",
            after.access_url_minutes > self.access_url_minutes,
            json!(self.access_url_minutes),
            json!(after.access_url_minutes),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(json: &str) -> PoliciesPatch {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_patch_sets_what_it_names_and_leaves_the_rest() {
        let before = Policies {
            min_cell_size: 5,
            review_sla_hours: Some(48),
            ..Policies::default()
        };
        let after = patch(r#"{"download": "members"}"#).apply(&before);
        assert_eq!(after.download, DownloadPolicy::Members);
        assert_eq!(after.min_cell_size, 5, "not reset to its default");
        assert_eq!(after.review_sla_hours, Some(48));
        // null turns reminders off; leaving it out keeps them
        let off = patch(r#"{"review_sla_hours": null}"#).apply(&before);
        assert_eq!(off.review_sla_hours, None);
        assert!(patch("{}").is_empty());
        assert!(serde_json::from_str::<PoliciesPatch>(r#"{"min_cel_size": 3}"#).is_err());
    }

    #[test]
    fn loosenings_are_named_and_tightenings_are_not() {
        let before = Policies::default();
        let looser = Policies {
            pseudonymise: false,
            min_cell_size: before.min_cell_size - 1,
            rounding_base: 1,
            zero_cells: ZeroCells::Show,
            showcase_queries_per_minute: before.showcase_queries_per_minute + 1,
            download: DownloadPolicy::Members,
            access_url_minutes: before.access_url_minutes + 1,
            max_request_days: before.max_request_days + 1,
            min_cohort_size: before.min_cohort_size - 1,
            review_sla_hours: Some(1),
        };
        let names: Vec<String> = before
            .loosenings(&looser)
            .into_iter()
            .map(|l| l.policy)
            .collect();
        assert_eq!(
            names,
            [
                "pseudonymise",
                "min_cell_size",
                "max_request_days",
                "min_cohort_size",
                "rounding_base",
                "zero_cells",
                "showcase_queries_per_minute",
                "download",
                "access_url_minutes"
            ]
        );
        assert!(looser.loosenings(&before).is_empty(), "tightening back");
        assert!(before.loosenings(&before).is_empty());
        let first = &before.loosenings(&looser)[1];
        assert_eq!(
            (first.from.clone(), first.to.clone()),
            (serde_json::json!(10), serde_json::json!(9))
        );
    }
}
