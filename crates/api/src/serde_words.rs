//! The JSON reader's refusals in the words of the API's users: what was
//! expected and what was given, without parser positions or Rust type names
//! (`invalid type: string "x", expected u32 at line 1 column 64` becomes
//! `expected a whole number, got the text "x"`).

/// `message` (a serde_json data error) in plain words.
pub(crate) fn plain(message: &str) -> String {
    let message = match message.rfind(" at line ") {
        Some(at) if message[at..].contains(" column ") => &message[..at],
        _ => message,
    };
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((given, expected)) = rest.split_once(", expected ")
    {
        return format!(
            "expected {}, got {}",
            expected_words(expected),
            given_words(given)
        );
    }
    if let Some(rest) = message.strip_prefix("invalid value: ")
        && let Some((given, expected)) = rest.split_once(", expected ")
    {
        return format!(
            "expected {}, got {}",
            expected_words(expected),
            given_words(given)
        );
    }
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, expected)) = rest.split_once('`')
    {
        let known = names(expected);
        return if known.is_empty() {
            format!("unknown field {name:?}: this object takes no fields")
        } else {
            format!("unknown field {name:?}; the fields are {known}")
        };
    }
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((name, expected)) = rest.split_once('`')
    {
        return format!("{name:?} is not one of {}", names(expected));
    }
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some((name, _)) = rest.split_once('`')
    {
        return format!("{name:?} is required");
    }
    message.to_owned()
}

/// The names of "expected one of `a`, `b`" as "a, b".
fn names(expected: &str) -> String {
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .collect::<Vec<_>>()
        .join(", ")
}

fn expected_words(expected: &str) -> String {
    let expected = expected.trim();
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number (0 or more)".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a boolean" | "a string" => expected.to_owned(),
        "a sequence" | "a set" => "a list".to_owned(),
        "a map" => "an object".to_owned(),
        _ if expected.starts_with("struct ") || expected.starts_with("tuple struct ") => {
            "an object".to_owned()
        }
        _ if expected.starts_with("enum ")
            || expected.starts_with("internally tagged enum")
            || expected.starts_with("adjacently tagged enum") =>
        {
            "one of the documented values".to_owned()
        }
        _ if expected.contains("unit variant") || expected.contains("variant identifier") => {
            "one of the documented values".to_owned()
        }
        other => other.to_owned(),
    }
}

fn given_words(given: &str) -> String {
    if let Some(text) = given.strip_prefix("string ") {
        return format!("the text {text}");
    }
    if let Some(n) = given
        .strip_prefix("integer `")
        .or_else(|| given.strip_prefix("floating point `"))
    {
        return n.trim_end_matches('`').to_owned();
    }
    match given {
        "map" => "an object".to_owned(),
        "sequence" => "a list".to_owned(),
        "null" | "unit value" => "null".to_owned(),
        other if other.starts_with("boolean `") => other
            .trim_start_matches("boolean `")
            .trim_end_matches('`')
            .to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::plain;

    #[test]
    fn refusals_say_what_was_expected_and_what_was_given() {
        for (serde, words) in [
            (
                "invalid type: string \"x\", expected u32 at line 1 column 64",
                "expected a whole number (0 or more), got the text \"x\"",
            ),
            (
                "invalid type: integer `-1`, expected u32 at line 1 column 3",
                "expected a whole number (0 or more), got -1",
            ),
            (
                "invalid type: map, expected a string at line 2 column 1",
                "expected a string, got an object",
            ),
            (
                "invalid type: sequence, expected struct Policies",
                "expected an object, got a list",
            ),
            (
                "unknown field `min_cel_size`, expected one of `pseudonymise`, `min_cell_size` at line 1 column 15",
                "unknown field \"min_cel_size\"; the fields are pseudonymise, min_cell_size",
            ),
            (
                "unknown variant `maybe`, expected one of `approve`, `reject`, `return`",
                "\"maybe\" is not one of approve, reject, return",
            ),
            ("missing field `title`", "\"title\" is required"),
        ] {
            let said = plain(serde);
            assert_eq!(said, words);
            assert!(!said.contains("line "), "{said}");
        }
    }
}
