//! The deployment files agree with the binary: every metric the Grafana
//! dashboard and the Prometheus alert rules read is one that `tre serve` or
//! `tre worker` exports, and a worker answers the health check that
//! `docker-compose.yml` asks of it. (`scripts/check-deploy` checks the same
//! files' syntax with promtool and the Compose Specification's schema.)

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A `tre` process, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(database_url: &str, args: &[&str]) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tre"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TRE_") {
            command.env_remove(key);
        }
    }
    let child = command
        .current_dir(repo_root())
        .env("TRE_DATABASE_URL", database_url)
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Process(child)
}

/// `GET path` once `addr` listens: the status line and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    for _ in 0..200 {
        if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
            )
            .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
            return (
                head.lines().next().unwrap_or_default().to_owned(),
                body.to_owned(),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {addr}");
}

/// The metric families a Prometheus page declares (`# TYPE name kind`).
fn families(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Every `tre_...` metric name in `text` (a histogram's `_bucket`, `_sum`
/// and `_count` series named by their family).
fn names_in(text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("tre_") {
        let start = at + found;
        let boundary = start == 0 || {
            let b = bytes[start - 1];
            !(b.is_ascii_alphanumeric() || b == b'_')
        };
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .map_or(text.len(), |n| start + n);
        if boundary {
            let name = &text[start..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|base| known.contains(*base))
                })
                .unwrap_or(name);
            names.insert(family.to_owned());
        }
        at = end.max(start + 4);
    }
    names
}

#[test]
fn dashboards_and_alerts_read_only_metrics_tre_exports() {
    let dir = std::env::temp_dir().join(format!("tre-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/tre.db", dir.display());
    let api = format!("127.0.0.1:{}", tre_testkit::free_port());
    let worker = format!("127.0.0.1:{}", tre_testkit::free_port());
    // started together on a fresh SQLite file: they take turns migrating it
    let _serve = spawn(&url, &["serve", "--listen", &api]);
    let _worker = spawn(
        &url,
        &["worker", "--pools", "dispense", "--metrics-listen", &worker],
    );
    let (status, api_page) = get(&api, "/metrics");
    assert!(status.contains("200"), "{status}");
    let (status, worker_page) = get(&worker, "/metrics");
    assert!(status.contains("200"), "{status}");
    // the health check docker-compose.yml asks of every worker
    let (status, ready) = get(&worker, "/readyz");
    assert!(status.contains("200"), "{status} {ready}");
    assert!(ready.contains(r#""database":true"#), "{ready}");
    // what the alerts and dashboard read about the system and readiness
    for family in [
        "tre_projects",
        "tre_dispense_bytes_total",
        "tre_dispense_units_done_total",
        "tre_audit_sealing_lag_seconds",
        "tre_audit_pending_events",
        "tre_ready",
    ] {
        assert!(api_page.contains(&format!("# TYPE {family} ")), "{family}");
    }
    assert!(
        api_page.contains("tre_ready{dependency=\"database\"} 1"),
        "{api_page}"
    );
    assert!(
        api_page.contains("tre_projects{state=\"failed\"} 0"),
        "{api_page}"
    );

    let mut exported = families(&api_page);
    exported.extend(families(&worker_page));
    for file in [
        "deploy/grafana/dashboards/tre.json",
        "deploy/prometheus/alerts.yml",
        "deploy/prometheus/alerts_test.yml",
    ] {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        let read = names_in(&text, &exported);
        assert!(!read.is_empty(), "{file} reads no tre metric");
        let unknown: Vec<_> = read.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} reads metrics tre does not export: {unknown:?}\nexported: {exported:?}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn names_in_finds_families() {
    let known: BTreeSet<String> = ["tre_a_seconds".to_owned()].into();
    let found = names_in(
        "rate(tre_a_seconds_bucket[5m]) + x_tre_b + tre_c_total{k=\"v\"}",
        &known,
    );
    assert_eq!(
        found,
        ["tre_a_seconds", "tre_c_total"]
            .map(str::to_owned)
            .into_iter()
            .collect()
    );
}
