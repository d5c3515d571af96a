use thiserror::Error;

/// Why a domain command was refused. The variant says how an adapter should
/// answer: `Invalid` is bad input (HTTP 422); `InvalidTransition`,
/// `Incomplete` and `Conflict` are state conflicts (HTTP 409). None of them
/// is worth retrying unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    /// A field of the input is invalid; `field` names it (a dotted path, e.g.
    /// `cohort.and[1].value` or `pipeline.stages[0].reviewers`).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// Several fields of the input are invalid (an inventory checked
    /// against its source): each problem names one.
    #[error("{}", problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("; "))]
    InvalidAll { problems: Vec<Problem> },
    /// The command is not allowed in the object's current state.
    #[error("cannot {}: the {object} is {state}{}", action.replace('_', " "), next_step(object, action, state))]
    InvalidTransition {
        object: &'static str,
        action: &'static str,
        state: String,
    },
    /// The object is not ready for the command (publishing, submitting):
    /// `field` of what was stored earlier is missing or does not hold yet,
    /// whatever this call sent.
    #[error("{field}: {message}")]
    Incomplete { field: String, message: String },
    /// The object is not ready for the command, for each of these reasons
    /// (all of them, so that they can be put right at once).
    #[error("{}", problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("; "))]
    NotReady { problems: Vec<Problem> },
    /// The command conflicts with what already happened (a stage already
    /// closed, a reviewer who already decided).
    #[error("{0}")]
    Conflict(String),
}

/// What leaves the state a refused command needs another of (an
/// environment's lifecycle; other objects' states say enough).
fn next_step(object: &str, action: &str, state: &str) -> &'static str {
    match (object, state, action) {
        ("environment", "active", "set_inventory" | "set_files") => {
            "; put it in maintenance first (POST /v1/environments/{id}/maintenance, `tre env maintenance ID`), change it, then reactivate"
        }
        ("environment", "draft", "maintenance" | "reactivate") => {
            "; publish it first (POST /v1/environments/{id}/publish, `tre env publish ID`)"
        }
        ("environment", "maintenance", "publish") => {
            "; it was published: reactivate it (POST /v1/environments/{id}/reactivate, `tre env reactivate ID`)"
        }
        ("environment", "active", "publish" | "reactivate") => "; it is active already",
        ("environment", "maintenance", "maintenance") => {
            "; it is in maintenance already: reactivate it when done"
        }
        _ => "",
    }
}

/// One reason an object is not ready: the part that is missing or does not
/// hold, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl Problem {
    /// Adds each of `more` to `problems` unless one of the same field is
    /// there already (two checks of one thing name it once).
    pub fn add_new(problems: &mut Vec<Problem>, more: impl IntoIterator<Item = Problem>) {
        for problem in more {
            if !problems.iter().any(|p| p.field == problem.field) {
                problems.push(problem);
            }
        }
    }
}

impl DomainError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same refusal, as the object's content not being ready for a
    /// command rather than this call's input being bad.
    pub fn incomplete(self) -> Self {
        match self {
            Self::Invalid { field, message } => Self::Incomplete { field, message },
            other => other,
        }
    }

    /// The field a validation error names, if any.
    /// What is wrong, without the field it names.
    pub fn message(&self) -> String {
        match self {
            Self::Invalid { message, .. } | Self::Incomplete { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } | Self::Incomplete { field, .. } => Some(field),
            Self::NotReady { problems } | Self::InvalidAll { problems } => {
                problems.first().map(|p| p.field.as_str())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused lifecycle step says, in words, what leaves the state.
    #[test]
    fn a_state_error_names_the_way_out() {
        let refused = |action, state: &str| {
            DomainError::InvalidTransition {
                object: "environment",
                action,
                state: state.to_owned(),
            }
            .to_string()
        };
        assert_eq!(
            refused("set_inventory", "active"),
            "cannot set inventory: the environment is active; put it in maintenance first (POST /v1/environments/{id}/maintenance, `tre env maintenance ID`), change it, then reactivate"
        );
        assert!(refused("reactivate", "draft").ends_with(
            "publish it first (POST /v1/environments/{id}/publish, `tre env publish ID`)"
        ));
        assert!(refused("publish", "maintenance").contains("reactivate it"));
        assert!(
            !refused("set_files", "active").contains('_'),
            "no internal names"
        );
    }
}
