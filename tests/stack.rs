//! `scripts/stack`: the whole topology as processes (PostgreSQL, Redis, the
//! S3 server, `tre serve`, dispense and notify/review workers). The demo runs
//! on it with no worker of its own, so the fleet does every job; the API
//! answers with the printed token; `down` stops exactly what `up` started.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// `scripts/stack ARGS --dir DIR` with this build of tre.
fn stack(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(repo_root().join("scripts/stack"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TRE_") || key.starts_with("AWS_") {
            command.env_remove(key);
        }
    }
    command
        .current_dir(repo_root())
        .env("TRE_BIN", env!("CARGO_BIN_EXE_tre"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `export KEY=VALUE` lines of the stack's env file.
fn env_file(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(dir.join("env"))
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `GET url` (http://host:port/path) with an optional bearer token: status
/// line and body.
fn get(url: &str, token: Option<&str>) -> (String, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// Sum of a counter's samples whose labels contain `labels`.
fn counter(page: &str, name: &str, labels: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn pids(dir: &Path) -> Vec<(String, u32)> {
    std::fs::read_to_string(dir.join("pids"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, pid)| (name.to_owned(), pid.trim().parse().unwrap()))
        .collect()
}

fn alive(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Takes the stack down if the test fails half-way.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = stack(&self.0, &["down"]);
        }
    }
}

#[test]
fn the_local_stack_runs_the_demo_on_its_fleet_and_stops_cleanly() {
    let dir = std::env::temp_dir().join(format!("tre-stack-{}", std::process::id()));
    let _down = Down(dir.clone());
    let up = stack(&dir, &["up", "--workers", "2"]);
    assert!(
        up.status.success(),
        "stack up: {}{}",
        text(&up.stderr),
        text(&up.stdout)
    );
    let printed = text(&up.stdout);
    let token = printed.lines().last().unwrap().trim().to_owned();
    assert!(printed.contains("tre stack up"), "{printed}");
    let env = env_file(&dir);
    let started = pids(&dir);
    let names: Vec<&str> = started.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "redis",
            "s3",
            "tre-api",
            "tre-dispense-1",
            "tre-dispense-2",
            "tre-review"
        ]
    );
    // a second `up` on the same folder is refused, and starts nothing
    let again = stack(&dir, &["up"]);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("already up"));

    // the demo, its jobs all run by the fleet (no worker of its own)
    let mut demo = Command::new(env!("CARGO_BIN_EXE_tre"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TRE_") || key.starts_with("AWS_") {
            demo.env_remove(key);
        }
    }
    let demo = demo
        .current_dir(repo_root())
        .envs(&env)
        .args(["demo", "--no-worker"])
        .output()
        .unwrap();
    assert!(
        demo.status.success(),
        "demo on the stack: {}{}\nlogs in {}",
        text(&demo.stderr),
        text(&demo.stdout),
        dir.display()
    );
    let out = text(&demo.stdout);
    assert!(out.contains("run by the worker fleet"), "{out}");
    assert!(out.contains("is ready:"), "{out}");
    // its project's objects are in the S3 server's bucket
    let project = out
        .lines()
        .find(|line| line.contains(" is ready: "))
        .and_then(|line| line.split("project ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    let bucket = dir.join("s3/tre-projects").join(&project);
    assert!(bucket.join("data").is_dir(), "{}", bucket.display());

    // the fleet did the work: dispense units on the dispense workers,
    // notifications on the review worker
    let workers: Vec<String> = std::fs::read_to_string(dir.join("workers"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(workers.len(), 3);
    let pages: Vec<String> = workers
        .iter()
        .map(|w| get(&format!("{w}/metrics"), None).1)
        .collect();
    let units: f64 = pages[..2]
        .iter()
        .map(|p| {
            counter(
                p,
                "tre_jobs_total",
                r#"kind="dispense_unit",outcome="succeeded""#,
            )
        })
        .sum();
    assert!(units >= 1.0, "dispense units on the dispense workers");
    assert!(
        counter(
            &pages[2],
            "tre_jobs_total",
            r#"kind="notify_reviewers",outcome="succeeded""#
        ) >= 1.0,
        "{}",
        pages[2]
    );

    // the API, with the token `up` printed
    let api = &env["TRE_URL"];
    let (status, body) = get(&format!("{api}/readyz"), None);
    assert!(status.contains("200"), "{status} {body}");
    // the platform admin sees the fleet's work: the project's dispense units
    let (status, body) = get(
        &format!("{api}/v1/ops/jobs?kind=dispense_unit&state=done"),
        Some(&token),
    );
    assert!(status.contains("200"), "{status} {body}");
    assert!(body.contains(&project), "{body}");
    let (status, _) = get(&format!("{api}/v1/ops/jobs"), Some("not-a-token"));
    assert!(status.contains("401"), "{status}");
    let status_cmd = stack(&dir, &["status"]);
    assert!(status_cmd.status.success(), "{}", text(&status_cmd.stdout));

    // down stops exactly what up started, and removes its folder
    let pg_data = std::fs::read_to_string(dir.join("postgres"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    let down = stack(&dir, &["down"]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    for (name, pid) in started {
        assert!(!alive(pid), "{name} (pid {pid}) still runs");
    }
    assert!(!dir.exists());
    assert!(!Path::new(&pg_data).exists());
    let (pg_port, _) = env["TRE_DATABASE_URL"]
        .rsplit_once('/')
        .map(|(a, b)| (a.rsplit(':').next().unwrap().to_owned(), b))
        .unwrap();
    assert!(
        std::net::TcpStream::connect(format!("127.0.0.1:{pg_port}")).is_err(),
        "PostgreSQL still listens"
    );
}
