//! End-to-end tests of the `tre` binary: run it as a user would, on the
//! embedded default (SQLite) and on PostgreSQL, and check what it prints,
//! what it stores and how it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tre_testkit::UseCases;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// `tre`, to run from the repository root with no `TRE_*` setting inherited.
fn tre_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tre"));
    command.current_dir(repo_root());
    for (key, _) in std::env::vars() {
        if key.starts_with("TRE_") {
            command.env_remove(key);
        }
    }
    command
}

/// Runs `tre` from the repository root with a clean `TRE_*` environment.
fn tre(database_url: &str, args: &[&str]) -> Output {
    let mut command = tre_command();
    command.args(args).env("TRE_DATABASE_URL", database_url);
    command.output().unwrap()
}

/// `tre args` on `database_url`, its projects' objects under `objects`.
fn tre_with_store(database_url: &str, objects: &Path, args: &[&str]) -> Output {
    tre_command()
        .args(args)
        .env("TRE_DATABASE_URL", database_url)
        .env("TRE_OBJECT_STORE", objects)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        stderr(&output),
        stdout(&output)
    );
    stdout(&output)
}

fn sqlite_url() -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("tre-cli-{}", unique()));
    let url = format!("sqlite://{}/tre.db", dir.display());
    (dir, url)
}

/// A fresh PostgreSQL database, or `None` (skipped with a message) when no
/// server answers and CI is not set.
fn postgres_url() -> Option<String> {
    let admin = std::env::var("TRE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("tre_cli_{}", unique().replace('-', "_"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let created = runtime.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&admin).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        Ok::<_, sqlx::Error>(())
    });
    match created {
        Ok(()) => Some(format!("{}/{name}", admin.rsplit_once('/').unwrap().0)),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: PostgreSQL test: no server at {admin} ({e})");
            None
        }
        Err(e) => panic!("PostgreSQL is required when CI is set: {e}"),
    }
}

/// Runs `work` on a fresh connection to the test database.
fn on_connection<T>(
    database_url: &str,
    work: impl AsyncFnOnce(&mut sqlx::AnyConnection) -> T,
) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(database_url).await.unwrap();
        work(&mut conn).await
    })
}

/// Executes raw SQL against the test database (to play the attacker).
fn sql(database_url: &str, statements: &[&str]) {
    on_connection(database_url, async |conn| {
        for statement in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string()))
                .execute(&mut *conn)
                .await
                .unwrap();
        }
    });
}

/// The number one query answers.
fn count(database_url: &str, query: &str) -> i64 {
    on_connection(database_url, async |conn| {
        use sqlx::Row;
        sqlx::query(sqlx::AssertSqlSafe(query.to_string()))
            .fetch_one(&mut *conn)
            .await
            .unwrap()
            .get::<i64, _>(0)
    })
}

fn demo_then_tamper(url: &str, disable_trigger: &str) {
    let out = ok(tre(url, &["demo"]));
    assert!(
        out.contains("bob tries to approve: refused (separation of duties"),
        "{out}"
    );
    assert!(
        out.contains("frank returns it too, quorum unreachable: in_revision (round 1)"),
        "{out}"
    );
    assert!(
        out.contains("frank approves stage 2: approved (round 2)"),
        "{out}"
    );
    assert!(
        out.contains("dave is too late, the stage has closed"),
        "{out}"
    );
    assert!(out.contains("is ready:"), "the demo dispenses: {out}");
    assert!(out.contains("keys pseudonymised for this project"), "{out}");
    assert!(out.contains("audit chain intact"), "{out}");
    // the demo can run again on the same store (users are reused)
    let again = ok(tre(url, &["demo"]));
    assert!(again.contains("approved (round 2)"));

    let verified = ok(tre(url, &["audit", "verify"]));
    assert!(verified.starts_with("audit log intact:"), "{verified}");

    // alter one row behind the application's back
    sql(
        url,
        &[
            disable_trigger,
            "UPDATE audit_events SET details = '{\"to\":\"approved\"}' WHERE seq = 7",
        ],
    );
    let broken = tre(url, &["audit", "verify"]);
    assert_eq!(broken.status.code(), Some(1), "{}", stdout(&broken));
    let text = stdout(&broken);
    assert!(
        text.contains("audit log BROKEN: event 7 was altered"),
        "{text}"
    );
    assert!(
        text.contains("6 events verified before the break"),
        "{text}"
    );
}

#[test]
fn demo_and_audit_verify_on_the_embedded_default() {
    let (dir, url) = sqlite_url();
    demo_then_tamper(&url, "DROP TRIGGER audit_events_no_update");
    // deleting the newest events is caught by the head
    let (dir2, url2) = sqlite_url();
    ok(tre(&url2, &["demo"]));
    sql(
        &url2,
        &[
            "DROP TRIGGER audit_events_no_delete",
            "DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events)",
        ],
    );
    let broken = tre(&url2, &["audit", "verify"]);
    assert_eq!(broken.status.code(), Some(1));
    assert!(
        stdout(&broken).contains("newest events deleted"),
        "{}",
        stdout(&broken)
    );
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(dir2);
}

#[test]
fn demo_and_audit_verify_on_postgres() {
    let Some(url) = postgres_url() else { return };
    demo_then_tamper(
        &url,
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
    );
}

#[test]
fn users_add_prints_the_token_last_and_refuses_bad_names() {
    let (dir, url) = sqlite_url();
    let out = ok(tre(&url, &["users", "add", "ops", "--platform-admin"]));
    let token = out.lines().last().unwrap();
    assert!(token.starts_with("tre_") && token.len() == 68, "{out}");
    assert!(out.contains("(platform admin)"));
    let out = ok(tre(
        &url,
        &[
            "users",
            "add",
            "alice",
            "--group",
            "researchers",
            "--group",
            "epi",
        ],
    ));
    assert_ne!(out.lines().last().unwrap(), token);

    let dup = tre(&url, &["users", "add", "alice"]);
    assert_eq!(dup.status.code(), Some(1));
    assert!(
        stderr(&dup).contains("user \"alice\" already exists"),
        "{}",
        stderr(&dup)
    );
    let bad = tre(&url, &["users", "add", "robert'); drop table users;--"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("invalid name:"), "{}", stderr(&bad));
    let usage = tre(&url, &["users", "add"]);
    assert_eq!(usage.status.code(), Some(2), "clap usage errors exit 2");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn environments_from_a_definition_file() {
    let (dir, url) = sqlite_url();
    ok(tre(&url, &["users", "add", "ops", "--platform-admin"]));
    for user in ["custodian", "carol", "bob", "dave", "erin", "frank"] {
        ok(tre(&url, &["users", "add", user]));
    }
    ok(tre(
        &url,
        &["users", "add", "alice", "--group", "researchers"],
    ));
    ok(tre(&url, &["users", "add", "outsider"]));

    // only platform admins create
    let refused = tre(
        &url,
        &[
            "env",
            "create",
            "--file",
            "fixtures/environments/biobank.toml",
            "--as",
            "alice",
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("forbidden"),
        "{}",
        stderr(&refused)
    );

    let out = ok(tre(
        &url,
        &[
            "env",
            "create",
            "--file",
            "fixtures/environments/biobank.toml",
            "--as",
            "ops",
        ],
    ));
    let id = out.lines().last().unwrap().to_owned();
    assert!(out.contains("state draft"), "{out}");
    // each command chained its audit events before it exited
    assert_eq!(count(&url, "SELECT COUNT(*) FROM audit_pending"), 0);
    assert!(count(&url, "SELECT COUNT(*) FROM audit_events") >= 10);
    // a draft is invisible to researchers
    assert_eq!(ok(tre(&url, &["env", "list", "--as", "alice"])).trim(), "");
    let shown = ok(tre(&url, &["env", "show", &id, "--as", "custodian"]));
    let env: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        env["inventory"]["datasets"][0]["fields"][10]["name"],
        "diabetes"
    );
    assert_eq!(
        env["inventory"]["datasets"][0]["fields"][10]["type"],
        "boolean"
    );
    assert_eq!(
        env["inventory"]["datasets"][1]["locations"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(env["pipeline"]["stages"][1]["rule"]["quorum"], 2);

    // its bulk files: a file inventory, refused whole with bad rows named
    // by line, else stored for the worker's check (none runs here)
    let files = repo_root().join("fixtures/data/files.tsv");
    let bad_files = dir.join("bad-files.tsv");
    let mut text = std::fs::read_to_string(&files).unwrap();
    text.push_str("1000001\tgenomes\tfiles/x.vcf\t10\n");
    std::fs::write(&bad_files, text).unwrap();
    let args = |file: &Path, who: &'static str| -> Vec<String> {
        [
            "env",
            "files",
            &id,
            "--file",
            file.to_str().unwrap(),
            "--as",
            who,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tre(&url, &args)
    };
    let refused = run(args(&bad_files, "custodian"));
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("invalid files: 1 bad row(s), nothing was stored: line 315: unknown file collection \"genomes\""),
        "{}",
        stderr(&refused)
    );
    let refused = run(args(&files, "alice"));
    assert!(
        stderr(&refused).contains("not found"),
        "{}",
        stderr(&refused)
    );
    let out = ok(run(args(&files, "custodian")));
    assert!(
        out.contains("313 files") && out.contains("checking"),
        "{out}"
    );

    // publishing waits for the files' check, and says so with whatever
    // else is missing
    let refused = tre(&url, &["env", "publish", &id, "--as", "custodian"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("not ready:")
            && stderr(&refused)
                .contains("inventory.files: file collection(s) ecg are declared but no file inventory was checked"),
        "{}",
        stderr(&refused)
    );
    // the dry run names the same, changing nothing, and says what is
    // published
    let checked = tre(&url, &["env", "check", &id, "--as", "custodian"]);
    assert_eq!(checked.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&checked.stdout)
            .contains("hospital_episodes publishes 6 field(s): participant_id, episode_id"),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );
    assert!(
        stderr(&checked).contains("1 problem(s) to put right before publishing")
            && stderr(&checked).contains("inventory.files: file collection(s) ecg"),
        "{}",
        stderr(&checked)
    );
    // a worker checks them
    let mut worker = tre_command();
    let mut worker = worker
        .env("TRE_DATABASE_URL", &url)
        .args(["worker", "--pools", "dispense"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut checked = false;
    for _ in 0..600 {
        let shown = ok(tre(&url, &["env", "show", &id, "--as", "custodian"]));
        let env: serde_json::Value = serde_json::from_str(&shown).unwrap();
        if !env["inventory"]["files"].is_null() {
            checked = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(checked, "the worker checked the file inventory");

    // the platform admin is not the environment's admin: they find what
    // they created, and change nothing
    let refused = tre(&url, &["env", "publish", &id, "--as", "ops"]);
    assert!(
        stderr(&refused).contains("only the environment's admins may configure it"),
        "{}",
        stderr(&refused)
    );
    assert!(ok(tre(&url, &["env", "show", &id, "--as", "ops"])).contains("Synthetic Biobank"));
    assert!(
        ok(tre(&url, &["env", "check", &id, "--as", "custodian"]))
            .contains("ready to publish: nothing is missing")
    );
    assert!(
        ok(tre(&url, &["env", "publish", &id, "--as", "custodian"]))
            .contains("is active (private)")
    );
    assert!(ok(tre(&url, &["env", "list", "--as", "alice"])).contains("Synthetic Biobank"));
    assert!(stderr(&tre(&url, &["env", "show", &id, "--as", "outsider"])).contains("not found"));
    assert!(
        ok(tre(
            &url,
            &["env", "visibility", &id, "public", "--as", "custodian"]
        ))
        .contains("(public)")
    );
    assert!(ok(tre(&url, &["env", "list", "--as", "outsider"])).contains("Synthetic Biobank"));
    assert!(
        ok(tre(&url, &["env", "maintenance", &id, "--as", "custodian"])).contains("is maintenance")
    );
    assert!(ok(tre(&url, &["env", "reactivate", &id, "--as", "custodian"])).contains("is active"));
    let refused = tre(&url, &["env", "reactivate", &id, "--as", "custodian"]);
    assert!(
        stderr(&refused)
            .contains("cannot reactivate: the environment is active; it is active already"),
        "{}",
        stderr(&refused)
    );

    // a definition with a wrong field is refused with its path, and changes nothing
    let bad_file = dir.join("bad.toml");
    let text = std::fs::read_to_string(repo_root().join("fixtures/environments/biobank.toml"))
        .unwrap()
        .replace(
            "{ dataset = \"participants\", field = \"townsend_index\" }",
            "{ dataset = \"participants\", field = \"income\" }",
        )
        .replace("name = \"bmi\",", "name = \"bmi\", type = \"string\",")
        .replace(
            "reviewers = [\"carol\", \"bob\"]",
            "reviewers = [\"carol\", \"bobby\"]",
        );
    std::fs::write(&bad_file, text).unwrap();
    let before = ok(tre(&url, &["env", "list", "--as", "ops"]));
    let bad = tre(
        &url,
        &[
            "env",
            "create",
            "--file",
            bad_file.to_str().unwrap(),
            "--source",
            "fixtures/data",
            "--as",
            "ops",
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("inventory.datasets[0].fields[7].type: declared string, but participants.parquet holds float values in \"bmi\""),
        "{}",
        stderr(&bad)
    );
    // the same file alone, as a dry run: every problem at once
    let dry = tre(
        &url,
        &[
            "env",
            "check",
            "--file",
            bad_file.to_str().unwrap(),
            "--source",
            "fixtures/data",
            "--as",
            "ops",
        ],
    );
    assert_eq!(dry.status.code(), Some(1));
    for expected in [
        "inventory.datasets[0].fields[7].type: declared string",
        "inventory.collections[1].fields[0].field: dataset \"participants\" has no field \"income\"",
        "pipeline.stages[0].reviewers: no user \"bobby\"",
    ] {
        assert!(
            stderr(&dry).contains(expected),
            "{expected}: {}",
            stderr(&dry)
        );
    }
    // validated before anything is written: no new environment
    assert_eq!(ok(tre(&url, &["env", "list", "--as", "ops"])), before);
    let events = ok(tre(
        &url,
        &["audit", "list", "--as", "ops", "--limit", "1000"],
    ));
    assert_eq!(
        events
            .lines()
            .filter(|l| l.contains("environment.create"))
            .count(),
        1
    );

    // attack: a source root holding the project output store (and the
    // database) is refused when the environment is created...
    let overlapping = tre(
        &url,
        &[
            "env",
            "create",
            "--file",
            "fixtures/environments/biobank.toml",
            "--source",
            ".",
            "--as",
            "ops",
        ],
    );
    assert_eq!(overlapping.status.code(), Some(1));
    assert!(
        stderr(&overlapping).contains("invalid source:")
            && stderr(&overlapping).contains("overlaps the project output store"),
        "{}",
        stderr(&overlapping)
    );
    // ...and a worker whose object store lies inside an environment's source
    // root refuses to start, naming the environment
    let mut worker = tre_command();
    let refused = worker
        .env("TRE_DATABASE_URL", &url)
        .env("TRE_OBJECT_STORE", "fixtures/data/projects")
        .args(["worker", "--pools", "dispense"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains(&format!("environment {id}"))
            && stderr(&refused).contains("overlaps the project output store"),
        "{}",
        stderr(&refused)
    );

    let missing = tre(
        &url,
        &["env", "create", "--file", "nope.toml", "--as", "ops"],
    );
    assert!(
        stderr(&missing).contains("cannot read nope.toml"),
        "{}",
        stderr(&missing)
    );
    let unknown_user = tre(&url, &["env", "list", "--as", "nobody"]);
    assert!(
        stderr(&unknown_user).contains("--as: no user \"nobody\""),
        "{}",
        stderr(&unknown_user)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn configuration_layers_and_errors() {
    let (dir, url) = sqlite_url();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tre.toml");
    std::fs::write(
        &file,
        "database_url = \"sqlite://ignored.db\"\nobject_store = \"from-file\"\n",
    )
    .unwrap();
    let out = ok(tre(
        &url,
        &[
            "--config",
            file.to_str().unwrap(),
            "--redis-url",
            "redis://127.0.0.1:1/0",
            "config",
        ],
    ));
    assert!(out.contains(&format!("database_url = {url:?}")), "{out}");
    assert!(
        out.contains("redis_url = Some(\"redis://127.0.0.1:1/0\")"),
        "{out}"
    );
    assert!(out.contains("# redis_url: flag --redis-url"), "{out}");
    assert!(out.contains("object_store = \"from-file\""), "{out}");
    assert!(
        out.contains("# database_url: env TRE_DATABASE_URL"),
        "{out}"
    );

    let bad = tre("mysql://localhost/x", &["config"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("database_url: must start with sqlite:// or postgres://"),
        "{}",
        stderr(&bad)
    );
    // credentials in a refused or unreachable URL are never printed
    let password = "PWPROBE123";
    for (database_url, args) in [
        ("mysql://tre:PWPROBE123@db/tre", &["config"][..]),
        (
            "postgres://tre:PWPROBE123@127.0.0.1:1/tre",
            &["users", "list"][..],
        ),
    ] {
        let refused = tre(database_url, args);
        assert_eq!(refused.status.code(), Some(1));
        let said = format!("{}{}", stdout(&refused), stderr(&refused));
        assert!(said.contains("tre:***@"), "{said}");
        assert!(!said.contains(password), "{said}");
    }
    let mut command = tre_command();
    command
        .env("TRE_DATABASE_URL", &url)
        .env("TRE_REDIS_URL", "redis-cluster://:PWPROBE123@cache:6379")
        .arg("config");
    let refused = command.output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(!stderr(&refused).contains(password), "{}", stderr(&refused));
    std::fs::write(&file, "databse_url = \"typo\"\n").unwrap();
    let typo = tre(&url, &["--config", file.to_str().unwrap(), "config"]);
    assert!(
        stderr(&typo).contains("unknown field `databse_url`"),
        "{}",
        stderr(&typo)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The files under `root`, folders walked, relative to it and sorted.
fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    found.sort();
    found
}

/// Asserts that `made` holds exactly the files of `expected`, byte for
/// byte; their relative paths.
fn same_files(expected: &Path, made: &Path) -> Vec<PathBuf> {
    let files = files_under(expected);
    assert_eq!(files, files_under(made), "the same files");
    for path in &files {
        assert_eq!(
            std::fs::read(expected.join(path)).unwrap(),
            std::fs::read(made.join(path)).unwrap(),
            "{} differs from a fresh `tre fixtures generate --files-every 16`; regenerate the fixtures",
            path.display()
        );
    }
    files
}

/// An installed binary (no clone at hand) runs the whole story in an empty
/// folder: it generates the fixtures into `.tre/`, the same bytes as the
/// repository's.
#[test]
fn demo_runs_in_an_empty_folder() {
    let (dir, _) = sqlite_url();
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = tre_command();
    command.current_dir(&dir).arg("demo");
    let out = ok(command.output().unwrap());
    assert!(out.contains("generating the synthetic biobank"), "{out}");
    assert!(out.contains("is ready:"), "the demo dispenses: {out}");
    let made = dir.join(".tre/fixtures");
    same_files(&repo_root().join("fixtures/data"), &made.join("data"));
    assert_eq!(
        std::fs::read(repo_root().join("fixtures/environments/biobank.toml")).unwrap(),
        std::fs::read(made.join("environments/biobank.toml")).unwrap()
    );
    // and again, on what it made
    let mut again = tre_command();
    again.current_dir(&dir).arg("demo");
    let out = ok(again.output().unwrap());
    assert!(!out.contains("generating the synthetic biobank"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn checked_in_fixtures_are_what_the_generator_makes() {
    let (dir, url) = sqlite_url();
    let out = dir.join("data");
    ok(tre(
        &url,
        &[
            "fixtures",
            "generate",
            "--files-every",
            "16",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    let checked_in = same_files(&repo_root().join("fixtures/data"), &out);
    // four tables, the file inventory and its 313 ECG files
    assert_eq!(checked_in.len(), 4 + 1 + 313);
    let _ = std::fs::remove_dir_all(dir);
}

/// A `tre worker` process against PostgreSQL and a private Redis.
struct WorkerProcess {
    child: std::process::Child,
}

impl WorkerProcess {
    fn start(database_url: &str, redis_url: &str, webhook_url: &str, extra: &[&str]) -> Self {
        let mut command = tre_command();
        command
            .env("TRE_DATABASE_URL", database_url)
            .env("TRE_REDIS_URL", redis_url)
            .env("TRE_WEBHOOK_URL", webhook_url)
            .env("TRE_WEBHOOK_SECRET", "0123456789abcdef-test")
            .args([
                "worker",
                "--pools",
                "notify",
                "--reconcile-interval-ms",
                "200",
                "--requeue-after-ms",
                "1000",
            ])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        Self {
            child: command.spawn().unwrap(),
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for<F, Fut>(what: &str, seconds: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A worker killed with SIGKILL in the middle of a job: its lease expires
/// and another worker process finishes the job. Nothing is lost, and the
/// effect is recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_job_is_finished_by_another() {
    use tre_testkit::{TestDb, TestRedis, WebhookReceiver, new_request, submit_counted, world};
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let store = &db.store;
    let w = world(store, &["rev1"], &["rev2a"], 1).await;
    // every webhook answer takes 2 s: long enough to kill the worker mid-job
    let receiver = WebhookReceiver::start(vec![], std::time::Duration::from_secs(2)).await;
    let lease = ["--lease-ms", "900"];
    let first = WorkerProcess::start(&db.url, &redis.url(), &receiver.url, &lease);

    let request = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    // these workers serve the notify pool only: the cohort's count is given
    submit_counted(store, &w.owner, &request.id, 100).await;
    let key = format!("notify_reviewers:{}:1:0", request.id);
    wait_for("the first worker is mid-job", 30, || async {
        receiver.arrived.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(
        store.jobs().job(&key).await.unwrap().unwrap().state,
        tre_jobs::JobState::Running
    );
    first.signal("-KILL");
    drop(first);

    let second = WorkerProcess::start(&db.url, &redis.url(), &receiver.url, &lease);
    wait_for("another worker finishes the job", 60, || async {
        store.jobs().job(&key).await.unwrap().unwrap().state == tre_jobs::JobState::Done
    })
    .await;
    let job = store.jobs().job(&key).await.unwrap().unwrap();
    assert_eq!(job.attempts, 2, "the killed attempt counts");
    // at-least-once towards the receiver (same delivery id twice, which
    // receivers deduplicate), exactly once in the store
    let ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("x-tre-delivery").unwrap().to_owned())
        .collect();
    assert!(
        ids.iter().all(|id| *id == format!("{key}:webhook")),
        "{ids:?}"
    );
    let delivered: Vec<_> = store
        .deliveries(&key)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.status == "delivered")
        .collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(store.inbox(&"rev1".into(), 10).await.unwrap().len(), 1);
    drop(second);
    db.finish().await;
}

/// SIGTERM lets the in-flight job finish within the drain deadline, then the
/// worker exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_jobs() {
    use tre_testkit::{TestDb, TestRedis, WebhookReceiver, new_request, submit_counted, world};
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let store = &db.store;
    let w = world(store, &["rev1"], &["rev2a"], 1).await;
    let receiver = WebhookReceiver::start(vec![], std::time::Duration::from_millis(1500)).await;
    let port = tre_testkit::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut worker = WorkerProcess::start(
        &db.url,
        &redis.url(),
        &receiver.url,
        &["--drain-ms", "10000", "--metrics-listen", &listen],
    );
    let request = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    // these workers serve the notify pool only: the cohort's count is given
    submit_counted(store, &w.owner, &request.id, 100).await;
    let key = format!("notify_reviewers:{}:1:0", request.id);
    wait_for("the job is in flight", 30, || async {
        receiver.arrived.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    // the worker's Prometheus endpoint shows the job in flight
    let metrics = http_get(&listen, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("tre_jobs_total{kind=\"notify_reviewers\",outcome=\"started\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tre_jobs_queue_depth{state=\"running\"} 1"),
        "{metrics}"
    );
    worker.signal("-TERM");
    let status = tokio::task::spawn_blocking(move || {
        let status = worker.child.wait().unwrap();
        drop(worker);
        status
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
    let job = store.jobs().job(&key).await.unwrap().unwrap();
    assert_eq!(
        (job.state.as_str(), job.attempts),
        ("done", 1),
        "finished, not abandoned"
    );
    db.finish().await;
}

/// A plain HTTP/1.1 GET over a real socket.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// `tre serve` on the embedded default: answers over HTTP, shuts down
/// cleanly on SIGTERM.
#[test]
fn serve_answers_and_stops_on_sigterm() {
    let (dir, url) = sqlite_url();
    let token = ok(tre(&url, &["users", "add", "ops", "--platform-admin"]));
    let token = token.lines().last().unwrap().to_owned();
    let addr = format!("127.0.0.1:{}", tre_testkit::free_port());
    let mut command = tre_command();
    let mut server = command
        .env("TRE_DATABASE_URL", &url)
        .args(["serve", "--listen", &addr])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut health = String::new();
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            health = http_get(&addr, "/healthz");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // an authenticated call over the wire
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    let body = r#"{"name": "Served", "source": "/srv/served"}"#;
    write!(
        stream,
        "POST /v1/environments HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(response.contains("\"state\":\"draft\""), "{response}");
    // a source root around the server's own folder (its database, its
    // project output) is refused, naming the field
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    let body = format!(
        r#"{{"name": "Greedy", "source": "{}"}}"#,
        repo_root().display()
    );
    write!(
        stream,
        "POST /v1/environments HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 422"), "{response}");
    assert!(response.contains("\"field\":\"source\""), "{response}");
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = server.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Operators from the command line: bulk changes show what they match and
/// ask (or take --yes), pauses reach SQL, and every change is audited under
/// the operator named with --as; nobody else may make them.
#[test]
fn operators_retry_discard_and_pause_from_the_cli() {
    let (dir, url) = sqlite_url();
    ok(tre(&url, &["users", "add", "ops", "--platform-admin"]));
    ok(tre(&url, &["users", "add", "alice"]));
    let insert = |key: &str, kind: &str, state: &str| {
        format!(
            "INSERT INTO outbox (job_key, kind, payload, state, attempts, due_at, created_at, updated_at, last_error) \
             VALUES ('{key}', '{kind}', '{{\"project\": \"{key}\"}}', '{state}', 3, 0, 0, 0, 'disk full')"
        )
    };
    sql(
        &url,
        &[
            &insert("dispense_unit:p1:0:0", "dispense_unit", "dead"),
            &insert("dispense_unit:p2:0:0", "dispense_unit", "dead"),
            &insert("notify_owner:r:1:approved", "notify_owner", "dead"),
        ],
    );
    let listed = ok(tre(
        &url,
        &["jobs", "list", "--pool", "dispense", "--state", "dead"],
    ));
    assert_eq!(listed.lines().count(), 2, "{listed}");
    // a dry run counts and shows; no terminal to ask: refused without --yes
    let dry = ok(tre(
        &url,
        &[
            "jobs",
            "retry",
            "--pool",
            "dispense",
            "--dry-run",
            "--as",
            "ops",
        ],
    ));
    assert!(dry.starts_with("2 job(s) match"), "{dry}");
    let unasked = tre(
        &url,
        &["jobs", "retry", "--pool", "dispense", "--as", "ops"],
    );
    assert_eq!(unasked.status.code(), Some(1));
    assert!(
        stderr(&unasked).contains("add --yes"),
        "{}",
        stderr(&unasked)
    );
    assert_eq!(
        count(&url, "SELECT COUNT(*) FROM outbox WHERE state = 'dead'"),
        3
    );
    // only platform admins
    let refused = tre(&url, &["jobs", "retry", "--yes", "--as", "alice"]);
    assert!(
        stderr(&refused).contains("forbidden"),
        "{}",
        stderr(&refused)
    );
    let done = ok(tre(
        &url,
        &[
            "jobs", "retry", "--pool", "dispense", "--yes", "--as", "ops",
        ],
    ));
    assert!(done.contains("2 job(s) pending again"), "{done}");
    let discarded = ok(tre(
        &url,
        &[
            "jobs",
            "discard",
            "notify_owner:r:1:approved",
            "--yes",
            "--as",
            "ops",
        ],
    ));
    assert!(discarded.contains("1 job(s) discarded"), "{discarded}");
    ok(tre(&url, &["jobs", "pause", "notify", "--as", "ops"]));
    let stats: serde_json::Value =
        serde_json::from_str(&ok(tre(&url, &["jobs", "stats"]))).unwrap();
    assert_eq!(stats["paused"], serde_json::json!(["notify"]));
    assert_eq!(stats["states"]["pending"], 2);
    ok(tre(&url, &["jobs", "resume", "notify", "--as", "ops"]));
    let bad = tre(&url, &["jobs", "pause", "everything", "--as", "ops"]);
    assert!(stderr(&bad).contains("expected notify, review or dispense"));
    let audit = ok(tre(
        &url,
        &["audit", "list", "--as", "ops", "--limit", "100"],
    ));
    let changes: Vec<(String, String)> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["object_type"] == "jobs" || e["object_type"] == "pool")
        .map(|e| {
            (
                e["actor"].as_str().unwrap().into(),
                e["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("ops", "jobs.retry"),
        ("ops", "jobs.discard"),
        ("ops", "pool.pause"),
        ("ops", "pool.resume"),
    ]
    .iter()
    .map(|(a, b)| ((*a).into(), (*b).into()))
    .collect();
    assert_eq!(changes, expected);
    let _ = std::fs::remove_dir_all(dir);
}

/// `tre users`: tokens made, listed, revoked; a user disabled and enabled;
/// each refused or allowed as a running store sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_tokens_and_disabling_from_the_cli() {
    let (dir, url) = sqlite_url();
    let first = ok(tre(&url, &["users", "add", "alice"]));
    let initial = first.lines().last().unwrap().to_owned();
    let made = ok(tre(
        &url,
        &[
            "users", "token", "create", "alice", "--name", "ci", "--days", "7",
        ],
    ));
    let ci = made.lines().last().unwrap().to_owned();
    assert!(
        ci.starts_with("tre_") && made.contains("(ci) for alice"),
        "{made}"
    );
    let refused = tre(
        &url,
        &[
            "users", "token", "create", "alice", "--name", "x", "--days", "91",
        ],
    );
    assert!(
        stderr(&refused).contains("invalid days"),
        "{}",
        stderr(&refused)
    );
    let listed = ok(tre(&url, &["users", "token", "list", "alice"]));
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(!listed.contains(&ci) && !listed.contains(&initial));
    let id = listed
        .lines()
        .find(|l| l.contains("\tci\t"))
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_owned();

    let store = tre_store::Store::open(&url).await.unwrap();
    assert!(store.authenticate(&ci).await.unwrap().is_some());
    ok(tre(&url, &["users", "token", "revoke", "alice", &id]));
    store.forget_cached_tokens();
    assert!(store.authenticate(&ci).await.unwrap().is_none(), "revoked");
    assert!(store.authenticate(&initial).await.unwrap().is_some());
    let refused = tre(&url, &["users", "token", "revoke", "alice", "nope"]);
    assert!(
        stderr(&refused).contains("no token nope"),
        "{}",
        stderr(&refused)
    );

    assert!(ok(tre(&url, &["users", "disable", "alice"])).contains("disabled alice"));
    assert!(ok(tre(&url, &["users", "list"])).contains("alice\t-\t-\tdisabled"));
    store.forget_cached_tokens();
    assert!(
        store.authenticate(&initial).await.unwrap().is_none(),
        "disabled"
    );
    ok(tre(&url, &["users", "enable", "alice"]));
    store.forget_cached_tokens();
    assert!(store.authenticate(&initial).await.unwrap().is_some());
    // a bad setting names itself
    let bad = tre_command()
        .args(["users", "list"])
        .env("TRE_DATABASE_URL", &url)
        .env("TRE_TOKEN_MAX_DAYS", "0")
        .output()
        .unwrap();
    assert!(stderr(&bad).contains("token_max_days"), "{}", stderr(&bad));
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Secrets never reach output: every setting holding one is set (a database
/// password, a webhook whose path and query are its credential, the webhook
/// signing key, an SMTP password), a worker runs a review notification that
/// fails on both the webhook (500) and the SMTP server (closed), at debug
/// level; neither `tre config`, `tre demo`, the worker's log, the job's
/// recorded error nor the delivery log shows any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_output() {
    use tre_testkit::{TestDb, TestRedis, WebhookReceiver, new_request, submit_counted, world};
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let Some(redis) = TestRedis::start() else {
        return;
    };
    const DB_PASSWORD: &str = "SECRET-DB-PASSWORD-1";
    const HOOK_PATH: &str = "SECRET-HOOK-PATH-2";
    const HOOK_TOKEN: &str = "SECRET-HOOK-TOKEN-3";
    const HOOK_KEY: &str = "SECRET-HOOK-SIGNING-KEY-4";
    const SMTP_PASSWORD: &str = "SECRET-SMTP-PASSWORD-5";
    let secrets = [DB_PASSWORD, HOOK_PATH, HOOK_TOKEN, HOOK_KEY, SMTP_PASSWORD];
    // trust authentication here: the password is carried, never checked
    let database_url = db.url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{DB_PASSWORD}@"),
        1,
    );
    assert_ne!(database_url, db.url);
    let receiver = WebhookReceiver::start(vec![500; 50], std::time::Duration::ZERO).await;
    let hook = format!("{}/{HOOK_PATH}?token={HOOK_TOKEN}", receiver.url);
    let smtp = format!(
        "smtp://mailer:{SMTP_PASSWORD}@127.0.0.1:{}",
        tre_testkit::free_port()
    );
    let with_secrets = |command: &mut Command| {
        command
            .env("TRE_DATABASE_URL", &database_url)
            .env("TRE_WEBHOOK_URL", &hook)
            .env("TRE_WEBHOOK_SECRET", HOOK_KEY)
            .env("TRE_SMTP_URL", &smtp)
            .env("TRE_SMTP_FROM", "TRE <tre@example.org>")
            .env("TRE_LOG", "debug");
    };
    let mut outputs = Vec::new();
    let mut config = tre_command();
    with_secrets(&mut config);
    let config = config.arg("config").output().unwrap();
    assert!(config.status.success(), "{}", stderr(&config));
    outputs.push(("tre config", stdout(&config) + &stderr(&config)));

    // a review notification that fails everywhere, at debug level
    let store = &db.store;
    let w = world(store, &["rev1"], &["rev2a"], 1).await;
    let log = std::env::temp_dir().join(format!("tre-secrets-{}.log", tre_testkit::unique()));
    let mut worker = tre_command();
    with_secrets(&mut worker);
    let mut worker = worker
        .env("TRE_REDIS_URL", redis.url())
        .args([
            "worker",
            "--pools",
            "notify",
            "--reconcile-interval-ms",
            "200",
        ])
        .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let request = store
        .app()
        .create_request(&w.owner, &w.env, new_request())
        .await
        .unwrap();
    submit_counted(store, &w.owner, &request.id, 100).await;
    let key = format!("notify_reviewers:{}:1:0", request.id);
    let failed_on = |what: &'static str| {
        let key = key.clone();
        move || {
            let key = key.clone();
            async move {
                store
                    .jobs()
                    .job(&key)
                    .await
                    .unwrap()
                    .and_then(|j| j.last_error)
                    .is_some_and(|e| e.contains(what))
            }
        }
    };
    // first the webhook fails (rev1 has no email address)...
    wait_for("the webhook failed", 60, failed_on("webhook")).await;
    let webhook_error = store
        .jobs()
        .job(&key)
        .await
        .unwrap()
        .unwrap()
        .last_error
        .unwrap();
    outputs.push(("the job's webhook error", webhook_error));
    // ...then the email, once rev1 has an address
    sqlx::query("UPDATE users SET email = 'rev1@example.org' WHERE id = 'rev1'")
        .execute(store.pool())
        .await
        .unwrap();
    wait_for("the email failed", 60, failed_on("smtp")).await;
    let _ = worker.kill();
    let _ = worker.wait();
    let smtp_error = store
        .jobs()
        .job(&key)
        .await
        .unwrap()
        .unwrap()
        .last_error
        .unwrap();
    outputs.push(("the job's smtp error", smtp_error));
    let deliveries = store.deliveries(&key).await.unwrap();
    assert!(!deliveries.is_empty());
    outputs.push(("the delivery log", format!("{deliveries:?}")));
    let worker_log = std::fs::read_to_string(&log).unwrap()
        + &std::fs::read_to_string(log.with_extension("out")).unwrap();
    assert!(
        worker_log.contains("DEBUG"),
        "the worker logged at debug level"
    );
    outputs.push(("the worker's log", worker_log));

    // tre serve, at debug level, answering a call
    let addr = format!("127.0.0.1:{}", tre_testkit::free_port());
    let serve_log = log.with_extension("serve");
    let mut serve = tre_command();
    with_secrets(&mut serve);
    let mut serve = serve
        .args(["serve", "--listen", &addr])
        .stdout(std::fs::File::create(serve_log.with_extension("serve-out")).unwrap())
        .stderr(std::fs::File::create(&serve_log).unwrap())
        .spawn()
        .unwrap();
    let mut health = String::new();
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            health = http_get(&addr, "/v1/requests");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(health.starts_with("HTTP/1.1 401"), "{health}");
    let _ = serve.kill();
    let _ = serve.wait();
    outputs.push((
        "tre serve",
        std::fs::read_to_string(&serve_log).unwrap()
            + &std::fs::read_to_string(serve_log.with_extension("serve-out")).unwrap(),
    ));
    let _ = std::fs::remove_file(&serve_log);
    let _ = std::fs::remove_file(serve_log.with_extension("serve-out"));

    // the demo, on the same database, at debug level (no webhook: the demo
    // waits for each notification)
    let mut demo = tre_command();
    let dir = std::env::temp_dir().join(format!("tre-secrets-demo-{}", tre_testkit::unique()));
    let demo = demo
        .current_dir(repo_root())
        .env("TRE_DATABASE_URL", &database_url)
        .env("TRE_OBJECT_STORE", dir.join("objects"))
        .env("TRE_SMTP_URL", &smtp)
        .env("TRE_SMTP_FROM", "TRE <tre@example.org>")
        .env("TRE_LOG", "info")
        .arg("demo")
        .output()
        .unwrap();
    outputs.push(("tre demo", stdout(&demo) + &stderr(&demo)));
    assert!(demo.status.success(), "{}", stderr(&demo));

    for (what, text) in &outputs {
        for secret in secrets {
            assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
        }
    }
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(log.with_extension("out"));
    let _ = std::fs::remove_dir_all(dir);
    db.finish().await;
}

/// After the demo, a member lists and reads the project's objects from the
/// CLI (the environment lets members read; the read is checked against the
/// manifest's SHA-256), a reviewer learns nothing, and a path out of the
/// project is refused.
#[test]
fn members_list_and_read_project_objects_from_the_cli() {
    let (dir, url) = sqlite_url();
    let objects = dir.join("objects");
    let run = |args: &[&str]| tre_with_store(&url, &objects, args);
    let demo = ok(run(&["demo"]));
    let project = demo
        .split("bob creates project ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .expect("the demo names its project")
        .to_owned();
    let listed = ok(run(&["projects", "objects", &project, "--as", "alice"]));
    assert!(listed.contains("manifest.json"), "{listed}");
    assert!(
        listed.contains("data/participants/part-00000.parquet"),
        "{listed}"
    );
    let file = dir.join("participants.parquet");
    ok(run(&[
        "projects",
        "get",
        &project,
        "data/participants/part-00000.parquet",
        "--as",
        "bob",
        "-o",
        file.to_str().unwrap(),
    ]));
    assert!(std::fs::metadata(&file).unwrap().len() > 1000);
    let hidden = run(&["projects", "objects", &project, "--as", "carol"]);
    assert_eq!(hidden.status.code(), Some(1));
    assert!(stderr(&hidden).contains("not found"), "{}", stderr(&hidden));
    let out = run(&[
        "projects",
        "get",
        &project,
        "../other/manifest.json",
        "--as",
        "alice",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("invalid path"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(dir);
}

/// A researcher and the reviewers do from the command line what they do
/// over HTTP (on the demo's environment, with a worker to count the cohort
/// and dispense): draft, edit, submit, decide stage by stage with stages
/// named by their ids, create the project and watch it; the custodian sees
/// the project's state, never its data; nobody acts outside their role.
#[test]
fn researchers_and_reviewers_work_from_the_cli() {
    let (dir, url) = sqlite_url();
    let objects = dir.join("objects");
    let run = |args: &[&str]| tre_with_store(&url, &objects, args);
    let demo = ok(run(&["demo"]));
    let env = demo
        .split("created \"Synthetic Biobank\" (")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("the demo names its environment")
        .to_owned();
    let mut worker = tre_command()
        .env("TRE_DATABASE_URL", &url)
        .env("TRE_OBJECT_STORE", &objects)
        .args(["worker"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let created = ok(run(&[
        "requests",
        "create",
        &env,
        "--title",
        "Smoking and BMI",
        "--collection",
        "baseline",
        "--cohort",
        r#"{"field": "sex", "op": "=", "value": "F"}"#,
        "--as",
        "alice",
    ]));
    let request = created.lines().last().unwrap().to_owned();
    // submitting a draft without purpose or duration names what is missing
    let refused = run(&["requests", "submit", &request, "--as", "alice"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("purpose"), "{}", stderr(&refused));
    ok(run(&[
        "requests",
        "edit",
        &request,
        "--purpose",
        "Association study",
        "--days",
        "90",
        "--as",
        "alice",
    ]));
    // bob may not edit alice's request
    assert_eq!(
        run(&["requests", "edit", &request, "--days", "30", "--as", "bob"])
            .status
            .code(),
        Some(1)
    );
    assert!(ok(run(&["requests", "submit", &request, "--as", "alice"])).contains("is checking"));
    let mut in_review = false;
    for _ in 0..600 {
        let shown = ok(run(&["requests", "show", &request, "--as", "alice"]));
        if shown.contains("\"in_review\"") {
            in_review = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(in_review, "the cohort was counted");
    assert!(
        ok(run(&[
            "requests", "list", "--role", "owner", "--as", "alice"
        ]))
        .contains(&request)
    );
    assert!(ok(run(&["reviews", "queue", "--as", "carol"])).contains(&request));
    // a stage by a wrong id is refused, naming the stages
    let wrong = run(&[
        "reviews",
        "decide",
        &request,
        "--stage",
        "committee",
        "--decision",
        "approve",
        "--as",
        "carol",
    ]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong)
            .contains("no stage \"committee\"; the stages are access-committee, custodian-signoff"),
        "{}",
        stderr(&wrong)
    );
    // the researcher cannot decide their own request
    let own = run(&[
        "reviews",
        "decide",
        &request,
        "--stage",
        "0",
        "--decision",
        "approve",
        "--as",
        "alice",
    ]);
    assert_eq!(own.status.code(), Some(1));
    ok(run(&[
        "reviews",
        "decide",
        &request,
        "--stage",
        "access-committee",
        "--decision",
        "approve",
        "--as",
        "carol",
    ]));
    for reviewer in ["dave", "erin"] {
        ok(run(&[
            "reviews",
            "decide",
            &request,
            "--stage",
            "custodian-signoff",
            "--decision",
            "approve",
            "--comment",
            "fine",
            "--as",
            reviewer,
        ]));
    }
    let shown = ok(run(&["requests", "show", &request, "--as", "alice"]));
    assert!(shown.contains("\"approved\""), "{shown}");

    let made = ok(run(&["projects", "create", &request, "--as", "alice"]));
    let project = made.lines().last().unwrap().to_owned();
    ok(run(&[
        "projects",
        "watch",
        &project,
        "--timeout-s",
        "120",
        "--as",
        "alice",
    ]));
    // a reviewer is no member: the project is not theirs to watch
    let hidden = run(&["projects", "show", &project, "--as", "carol"]);
    assert_eq!(hidden.status.code(), Some(1));
    assert!(stderr(&hidden).contains("not found"), "{}", stderr(&hidden));
    // the custodian sees its state and who has access, not its data
    let overseen = ok(run(&["env", "projects", &env, "--as", "custodian"]));
    let line = overseen
        .lines()
        .find(|l| l.starts_with(&project))
        .unwrap_or_else(|| panic!("{overseen}"));
    assert!(
        line.contains("\tready\t") && line.contains("Smoking and BMI"),
        "{line}"
    );
    let refused = run(&["env", "projects", &env, "--as", "alice"]);
    assert_eq!(refused.status.code(), Some(1));
    let _ = worker.kill();
    let _ = worker.wait();
    let _ = std::fs::remove_dir_all(dir);
}

/// The custodian's quickstart in the README, exactly as written, in an
/// empty folder with `tre` on the PATH: generated data standing for the
/// custodian's own, a definition file, the dry run, create, publish, a
/// worker, a request, a decision, a project dispensed and overseen.
#[test]
fn the_custodians_quickstart_in_the_readme_runs() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let script = readme
        .split("<!-- quickstart -->\n```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the README has the quickstart block");
    let dir = std::env::temp_dir().join(format!("tre-quickstart-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("quickstart.sh"), script).unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tre"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("timeout");
    command
        .args(["300", "bash", "-eu", "-o", "pipefail", "quickstart.sh"])
        .current_dir(&dir)
        .env("PATH", path);
    for (key, _) in std::env::vars() {
        if key.starts_with("TRE_") {
            command.env_remove(key);
        }
    }
    let out = command.output().unwrap();
    let said = stdout(&out);
    assert!(
        out.status.success(),
        "{said}\n{}\nworker: {}",
        stderr(&out),
        std::fs::read_to_string(dir.join("worker.log")).unwrap_or_default()
    );
    for expected in [
        "ready to publish: nothing is missing",
        "patients publishes 3 field(s): participant_id, sex, year_of_birth",
        "is active (private)",
        "is checking",
        "is approved",
    ] {
        assert!(said.contains(expected), "{expected}: {said}");
    }
    // the custodian's view of the project: ready, with its request
    let last = said.lines().last().unwrap_or_default();
    assert!(
        last.contains("\tready\t") && last.contains("Sex by birth year"),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
