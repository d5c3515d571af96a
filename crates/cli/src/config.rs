//! Settings, layered: built-in defaults, then a config file, then `TRE_*`
//! environment variables, then command-line flags. Validated once at start-up;
//! errors name the setting.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use tre_domain::StoreRoot;
use tre_domain::redact::redact_url;

/// Effective settings. Each field documents its default. `Debug` shows
/// URLs without their passwords and no secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// `TRE_DATABASE_URL`, `--database-url`. SQL database, the source of
    /// truth: `sqlite://PATH` or `postgres://USER@HOST:PORT/DB`.
    /// Default: `sqlite://.tre/tre.db` (embedded).
    pub database_url: String,
    /// `TRE_OBJECT_STORE`, `--object-store`. Where project data is
    /// dispensed, one prefix per project: a local folder, `file://PATH` or
    /// `s3://BUCKET[/PREFIX]` (S3 settings from the standard `AWS_*`
    /// variables). No environment's source root may overlap it. Default:
    /// `.tre/objects`. (Each environment's source data is where the platform
    /// admin who created it said: its source root.)
    pub object_store: String,
    /// `TRE_LOG`. Log filter (tracing `EnvFilter` syntax). Default: `warn`.
    pub log: String,
    /// `TRE_REDIS_URL`, `--redis-url`. Queue for the job runtime
    /// (`redis://HOST:PORT/DB`; standalone Redis, not Cluster). Default:
    /// none, which means the embedded in-process queue.
    pub redis_url: Option<String>,
    /// `TRE_WEBHOOK_URL`. Where notifications are POSTed. Default: none.
    pub webhook_url: Option<String>,
    /// `TRE_WEBHOOK_SECRET`. HMAC-SHA256 key for webhook signatures (at
    /// least 16 characters; required with a webhook URL). Default: none.
    pub webhook_secret: Option<tre_domain::redact::Secret>,
    /// `TRE_SMTP_URL`. SMTP server for email notifications:
    /// `smtp://host:25`, `smtp://user:pass@host:587?tls=required` or
    /// `smtps://host:465`. Default: none (no email).
    pub smtp_url: Option<String>,
    /// `TRE_SMTP_FROM`. The sender of notification emails, e.g.
    /// `Biobank TRE <tre@biobank.example>`; required with `smtp_url`.
    pub smtp_from: Option<String>,
    /// `TRE_TOKEN_MAX_DAYS`. The longest lifetime of an API token, in days
    /// (1 to 3650); new tokens get it unless they ask for less. Default: 90.
    pub token_max_days: String,
    /// Where each value came from, for `tre config show`.
    pub sources: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use tre_domain::redact::url_origin;
        f.debug_struct("Settings")
            .field("database_url", &redact_url(&self.database_url))
            .field("object_store", &self.object_store)
            .field("log", &self.log)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("webhook_url", &self.webhook_url.as_deref().map(url_origin))
            .field("webhook_secret", &self.webhook_secret)
            .field("smtp_url", &self.smtp_url.as_deref().map(redact_url))
            .field("smtp_from", &self.smtp_from)
            .field("token_max_days", &self.token_max_days)
            .finish_non_exhaustive()
    }
}

/// The config file: every key optional. No `Debug`: it holds secrets.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    database_url: Option<String>,
    object_store: Option<String>,
    log: Option<String>,
    redis_url: Option<String>,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
    smtp_url: Option<String>,
    smtp_from: Option<String>,
    token_max_days: Option<u32>,
}

/// Values given as flags.
#[derive(Debug, Default, Clone)]
pub struct FlagSettings {
    pub config: Option<PathBuf>,
    pub database_url: Option<String>,
    pub object_store: Option<String>,
    pub redis_url: Option<String>,
}

impl Settings {
    fn defaults() -> Self {
        Self {
            database_url: "sqlite://.tre/tre.db".into(),
            object_store: ".tre/objects".into(),
            log: "warn".into(),
            redis_url: None,
            webhook_url: None,
            webhook_secret: None,
            smtp_url: None,
            smtp_from: None,
            token_max_days: "90".into(),
            sources: vec![
                ("database_url", "default".into()),
                ("object_store", "default".into()),
                ("log", "default".into()),
                ("redis_url", "default".into()),
                ("webhook_url", "default".into()),
                ("webhook_secret", "default".into()),
                ("smtp_url", "default".into()),
                ("smtp_from", "default".into()),
                ("token_max_days", "default".into()),
            ],
        }
    }

    fn set(&mut self, key: &'static str, value: String, source: &str) {
        match key {
            "database_url" => self.database_url = value,
            "object_store" => self.object_store = value,
            "log" => self.log = value,
            "redis_url" => self.redis_url = Some(value),
            "webhook_url" => self.webhook_url = Some(value),
            "webhook_secret" => self.webhook_secret = Some(tre_domain::redact::Secret::new(value)),
            "smtp_url" => self.smtp_url = Some(value),
            "smtp_from" => self.smtp_from = Some(value),
            "token_max_days" => self.token_max_days = value,
            _ => unreachable!("unknown setting {key}"),
        }
        if let Some(entry) = self.sources.iter_mut().find(|(k, _)| *k == key) {
            entry.1 = source.to_owned();
        }
    }

    /// Resolves the layers. The config file is `--config`, else `TRE_CONFIG`,
    /// else `./tre.toml` when it exists; a named file that is missing is an
    /// error.
    pub fn load(flags: &FlagSettings, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut settings = Self::defaults();
        let (path, required) = match (&flags.config, env("TRE_CONFIG")) {
            (Some(p), _) => (p.clone(), true),
            (None, Some(p)) => (PathBuf::from(p), true),
            (None, None) => (PathBuf::from("tre.toml"), false),
        };
        if required || path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("config: cannot read {}", path.display()))?;
            // the parser's own message quotes the offending line, which can
            // hold a password: only its line number and reason are shown
            let file: FileSettings = toml::from_str(&text).map_err(|e| {
                let line = e
                    .span()
                    .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
                anyhow::anyhow!(
                    "config: {} is not a valid tre config file{}: {}",
                    path.display(),
                    line.map(|l| format!(" (line {l})")).unwrap_or_default(),
                    e.message()
                )
            })?;
            let source = format!("file {}", path.display());
            for (key, value) in [
                ("database_url", file.database_url),
                ("object_store", file.object_store),
                ("log", file.log),
                ("redis_url", file.redis_url),
                ("webhook_url", file.webhook_url),
                ("webhook_secret", file.webhook_secret),
                ("smtp_url", file.smtp_url),
                ("smtp_from", file.smtp_from),
                ("token_max_days", file.token_max_days.map(|d| d.to_string())),
            ] {
                if let Some(v) = value {
                    settings.set(key, v, &source);
                }
            }
        }
        for (key, var) in [
            ("database_url", "TRE_DATABASE_URL"),
            ("object_store", "TRE_OBJECT_STORE"),
            ("log", "TRE_LOG"),
            ("redis_url", "TRE_REDIS_URL"),
            ("webhook_url", "TRE_WEBHOOK_URL"),
            ("webhook_secret", "TRE_WEBHOOK_SECRET"),
            ("smtp_url", "TRE_SMTP_URL"),
            ("smtp_from", "TRE_SMTP_FROM"),
            ("token_max_days", "TRE_TOKEN_MAX_DAYS"),
        ] {
            if let Some(v) = env(var).filter(|v| !v.is_empty()) {
                settings.set(key, v, &format!("env {var}"));
            }
        }
        for (key, flag, value) in [
            ("database_url", "--database-url", &flags.database_url),
            ("object_store", "--object-store", &flags.object_store),
            ("redis_url", "--redis-url", &flags.redis_url),
        ] {
            if let Some(v) = value {
                settings.set(key, v.clone(), &format!("flag {flag}"));
            }
        }
        settings.validate()?;
        Ok(settings)
    }

    /// [`Settings::load`] from the process environment, then logging to
    /// stderr at the configured level: how every binary of tre starts.
    pub fn load_and_log(flags: &FlagSettings) -> Result<Self> {
        let settings = Self::load(flags, |k| std::env::var(k).ok())?;
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(&settings.log))
            .with_writer(std::io::stderr)
            .init();
        Ok(settings)
    }

    /// [`Settings::token_max_days`], checked by `validate`.
    pub fn token_max_days(&self) -> u32 {
        self.token_max_days.parse().unwrap_or(90)
    }

    fn validate(&self) -> Result<()> {
        if !self
            .token_max_days
            .parse::<u32>()
            .is_ok_and(|d| (1..=3650).contains(&d))
        {
            bail!(
                "token_max_days: {:?} is not a number of days from 1 to 3650",
                self.token_max_days
            );
        }
        let url = &self.database_url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            bail!(
                "database_url: must start with sqlite:// or postgres:// (got {:?})",
                redact_url(url)
            );
        }
        self.output_root()?;
        tracing_subscriber::EnvFilter::try_new(&self.log)
            .map_err(|e| anyhow::anyhow!("log: {e}"))?;
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            bail!(
                "redis_url: must start with redis:// or rediss:// (got {:?}); Redis Cluster is not supported",
                redact_url(url)
            );
        }
        match (&self.webhook_url, &self.webhook_secret) {
            (Some(url), Some(secret)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    // not the value: a webhook's address is often its credential
                    bail!("webhook_url: must start with http:// or https://");
                }
                if secret.expose().chars().count() < 16 {
                    bail!("webhook_secret: must be at least 16 characters");
                }
            }
            (Some(_), None) => bail!("webhook_secret: required when webhook_url is set"),
            (None, Some(_)) => bail!("webhook_url: required when webhook_secret is set"),
            (None, None) => {}
        }
        if let Some(url) = &self.smtp_url {
            if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                bail!("smtp_url: must start with smtp:// or smtps://");
            }
            if self.smtp_from.is_none() {
                bail!("smtp_from: required when smtp_url is set");
            }
        }
        Ok(())
    }

    /// The object store as a root (a relative folder made absolute), to
    /// keep every environment's source root away from it.
    pub fn output_root(&self) -> Result<StoreRoot> {
        let value = self.object_store.trim();
        if value.is_empty() {
            bail!("object_store: must not be empty");
        }
        if value.starts_with("s3://") {
            return StoreRoot::parse("object_store", value).map_err(|e| anyhow::anyhow!("{e}"));
        }
        if value.contains("://") && !value.starts_with("file://") {
            bail!(
                "object_store: expected a local folder, file://PATH or s3://BUCKET[/PREFIX] (got {:?})",
                redact_url(value)
            );
        }
        let folder = std::path::absolute(value.strip_prefix("file://").unwrap_or(value))
            .with_context(|| format!("object_store: {:?}", redact_url(value)))?;
        let folder = folder
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("object_store: not a UTF-8 path"))?;
        StoreRoot::parse("object_store", folder).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = std::env::temp_dir().join(format!("tre-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tre.toml");
        std::fs::write(&file, "database_url = \"sqlite://from-file.db\"\nobject_store = \"file-out\"\nlog = \"info\"\n").unwrap();
        let flags = FlagSettings {
            config: Some(file.clone()),
            object_store: Some("flag-out".into()),
            ..Default::default()
        };
        let s = Settings::load(
            &flags,
            env(&[
                ("TRE_DATABASE_URL", "postgres://env/db"),
                ("TRE_OBJECT_STORE", "env-out"),
            ]),
        )
        .unwrap();
        assert_eq!(s.database_url, "postgres://env/db", "env beats file");
        assert_eq!(s.object_store, "flag-out", "flag beats env");
        assert_eq!(s.log, "info", "file beats default");
        assert_eq!(s.redis_url, None, "default");
        let sources: HashMap<_, _> = s.sources.iter().cloned().collect();
        assert_eq!(sources["database_url"], "env TRE_DATABASE_URL");
        assert_eq!(sources["object_store"], "flag --object-store");
        assert!(sources["log"].starts_with("file "));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn errors_name_the_setting() {
        let flags = FlagSettings::default();
        let err = Settings::load(&flags, env(&[("TRE_DATABASE_URL", "mysql://x")])).unwrap_err();
        assert!(err.to_string().starts_with("database_url:"), "{err}");
        let err = Settings::load(&flags, env(&[("TRE_OBJECT_STORE", "gs://bucket")])).unwrap_err();
        assert!(err.to_string().starts_with("object_store:"), "{err}");
        let err = Settings::load(&flags, env(&[("TRE_OBJECT_STORE", "/")])).unwrap_err();
        assert!(err.to_string().starts_with("object_store:"), "{err}");
        let err = Settings::load(&flags, env(&[("TRE_LOG", "[[[")])).unwrap_err();
        assert!(err.to_string().starts_with("log:"), "{err}");
        let missing = FlagSettings {
            config: Some("/nonexistent/tre.toml".into()),
            ..Default::default()
        };
        let err = Settings::load(&missing, env(&[])).unwrap_err();
        assert!(err.to_string().starts_with("config:"), "{err}");
    }

    #[test]
    fn nothing_set_means_embedded_defaults() {
        let s = Settings::load(&FlagSettings::default(), env(&[])).unwrap();
        assert_eq!(s.database_url, "sqlite://.tre/tre.db");
        assert_eq!(s.redis_url, None, "embedded queue");
        let output = s.output_root().unwrap();
        let here = std::env::current_dir().unwrap().join(".tre/objects");
        assert_eq!(output.to_string(), here.to_str().unwrap(), "made absolute");
    }

    #[test]
    fn webhook_and_redis_settings_are_checked() {
        let flags = FlagSettings::default();
        let err = Settings::load(&flags, env(&[("TRE_WEBHOOK_URL", "http://x")])).unwrap_err();
        assert!(
            err.to_string().starts_with("webhook_secret: required"),
            "{err}"
        );
        let err = Settings::load(
            &flags,
            env(&[
                ("TRE_WEBHOOK_URL", "http://x"),
                ("TRE_WEBHOOK_SECRET", "short"),
            ]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("webhook_secret: must be at least 16"),
            "{err}"
        );
        let err = Settings::load(
            &flags,
            env(&[
                ("TRE_WEBHOOK_URL", "ftp://x"),
                ("TRE_WEBHOOK_SECRET", "0123456789abcdef"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("webhook_url:"), "{err}");
        let err = Settings::load(&flags, env(&[("TRE_REDIS_URL", "localhost:6379")])).unwrap_err();
        assert!(err.to_string().starts_with("redis_url:"), "{err}");
        let err =
            Settings::load(&flags, env(&[("TRE_SMTP_URL", "smtp://127.0.0.1:25")])).unwrap_err();
        assert!(err.to_string().starts_with("smtp_from: required"), "{err}");
        let err = Settings::load(
            &flags,
            env(&[
                ("TRE_SMTP_URL", "mail.example:25"),
                ("TRE_SMTP_FROM", "t@x.org"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("smtp_url:"), "{err}");
        let ok = Settings::load(
            &flags,
            env(&[("TRE_REDIS_URL", "redis://127.0.0.1:6379/0")]),
        )
        .unwrap();
        assert_eq!(ok.redis_url.as_deref(), Some("redis://127.0.0.1:6379/0"));
    }

    /// Every message about a setting that holds a URL shows it redacted,
    /// valid or not, from the environment or from a config file.
    #[test]
    fn no_message_quotes_a_password() {
        let flags = FlagSettings::default();
        let password = "PWPROBE123";
        for (var, value) in [
            ("TRE_DATABASE_URL", "mysql://tre:PWPROBE123@db/tre"),
            ("TRE_DATABASE_URL", "postgres//tre:PWPROBE123@db/tre"),
            ("TRE_REDIS_URL", "tcp://:PWPROBE123@cache:6379/0"),
            ("TRE_REDIS_URL", "redis-cluster://u:PWPROBE123@cache:6379"),
            ("TRE_OBJECT_STORE", "gs://u:PWPROBE123@bucket/prefix"),
            ("TRE_OBJECT_STORE", "s3://u:PWPROBE123@/prefix"),
            ("TRE_SMTP_URL", "mail://u:PWPROBE123@relay:25"),
            ("TRE_WEBHOOK_URL", "ftp://hooks.example/PWPROBE123"),
        ] {
            let err = Settings::load(
                &flags,
                env(&[
                    (var, value),
                    ("TRE_WEBHOOK_SECRET", "0123456789abcdef"),
                    ("TRE_SMTP_FROM", "tre@example.org"),
                ]),
            )
            .unwrap_err();
            let message = format!("{err:#}");
            assert!(!message.contains(password), "{var}: {message}");
        }
        // a config file the parser refuses, on the line with the password
        let dir = std::env::temp_dir().join(format!("tre-config-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tre.toml");
        std::fs::write(
            &file,
            "log = \"info\"\nsmtp_url = \"smtp://u:PWPROBE123@relay:25\" junk\n",
        )
        .unwrap();
        let flags = FlagSettings {
            config: Some(file),
            ..Default::default()
        };
        let message = format!("{:#}", Settings::load(&flags, env(&[])).unwrap_err());
        assert!(message.contains("line 2"), "{message}");
        assert!(!message.contains(password), "{message}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
