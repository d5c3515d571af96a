//! Keeping secrets out of what tre prints: URLs carry credentials (a
//! database password, an SMTP password, a Slack or Teams webhook's token in
//! its path), so a URL reaches a message or a log line only redacted.

/// `url` with the password of its user information replaced by `***`, and
/// the values of query parameters that look like credentials (`password`,
/// `secret`, `token`, `key`, `sig`...) likewise:
/// `postgres://tre:s3cret@db:5432/tre` becomes `postgres://tre:***@db:5432/tre`.
/// Text that is not a well-formed URL (`postgres//u:pw@db`, `u:pw@host`)
/// loses whatever lies between a `:` and an `@` of its first part, the
/// place a password would be.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return redact_userinfo(url);
    };
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if secret_name(k) => format!("{k}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// `text` with the password of a `user:password@` in it starred: the part
/// between the `:` and the last `@` before any `?` or `#`, from the last
/// `/` before that `@`.
fn redact_userinfo(text: &str) -> String {
    let head = text.find(['?', '#']).map_or(text, |i| &text[..i]);
    let Some(at) = head.rfind('@') else {
        return text.to_owned();
    };
    let start = head[..at].rfind('/').map_or(0, |i| i + 1);
    match head[start..at].find(':') {
        Some(colon) => format!("{}***{}", &text[..start + colon + 1], &text[at..]),
        None => text.to_owned(),
    }
}

/// Only where a URL points: `scheme://host[:port]`, without user
/// information, path or query (a webhook's path is often its credential).
pub fn url_origin(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a url)".to_owned();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}")
}

fn secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "pass",
        "secret",
        "token",
        "key",
        "sig",
        "auth",
        "credential",
    ]
    .iter()
    .any(|s| name.contains(s))
}

/// A secret value (a webhook's signing key, a project's pseudonym key): its
/// `Debug` and `Display` print `***`, it does not implement `Serialize` (so
/// it cannot reach a JSON answer or a log field by accident), and the one
/// way to read it is [`Secret::expose`], which says so where it is called.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it (signing,
    /// keying, storing).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_survive() {
        let cases = [
            (
                "postgres://tre:s3cret@db.internal:5432/tre?sslmode=require",
                "postgres://tre:***@db.internal:5432/tre?sslmode=require",
            ),
            ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
            (
                "smtp://mailer:pw@relay:587?tls=required",
                "smtp://mailer:***@relay:587?tls=required",
            ),
            ("sqlite://.tre/tre.db", "sqlite://.tre/tre.db"),
            (
                "https://hooks.example/x?token=abc&team=1",
                "https://hooks.example/x?token=***&team=1",
            ),
            ("postgres://user@host/db", "postgres://user@host/db"),
            ("not a url", "not a url"),
            // malformed, and still not shown
            ("postgres//tre:PW1@db/tre", "postgres//tre:***@db/tre"),
            ("tre:PW2@db:5432/tre", "tre:***@db:5432/tre"),
            ("redis:/:PW3@cache", "redis:/:***@cache"),
            ("alice@example.org", "alice@example.org"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
        assert_eq!(
            url_origin("https://hooks.slack.com/services/T000/B000/XXXXSECRET"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            url_origin("http://u:p@127.0.0.1:9/hook?k=v"),
            "http://127.0.0.1:9"
        );
    }

    #[test]
    fn a_secret_prints_as_stars_whatever_prints_it() {
        #[derive(Debug)]
        struct Config {
            #[allow(dead_code)]
            key: Secret,
        }
        let key: Secret = serde_json::from_str("\"k3y-material\"").unwrap();
        let config = Config { key: key.clone() };
        for shown in [
            format!("{key}"),
            format!("{key:?}"),
            format!("{config:?}"),
            format!("{config:#?}"),
        ] {
            assert!(!shown.contains("k3y"), "{shown}");
        }
        assert_eq!(key.expose(), "k3y-material");
    }
}
