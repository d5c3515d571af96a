use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident $(#[$field:meta])*) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
            schemars::JsonSchema,
        )]
        #[serde(transparent)]
        pub struct $name($(#[$field])* pub String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

string_id!(
    /// A user (a person or a service account): 1 to 64 of
    /// `A-Z a-z 0-9 . _ - @`.
    UserId
    #[schemars(regex(pattern = crate::schema::HANDLE))]
);
string_id!(
    /// A research environment.
    EnvironmentId
);
string_id!(
    /// An access request.
    RequestId
);
string_id!(
    /// A research project created from an approved request.
    ProjectId
);
