//! A PostgreSQL cluster of the test's own, for tests that stop and restart the
//! database.

use std::process::Command;

use crate::db::unique;
use crate::redis::free_port;

/// A PostgreSQL cluster of the test's own (`initdb` into a temporary
/// folder, served on a free port, no fsync), for tests that stop or restart
/// the database under running workers. Run as `postgres` when the test runs
/// as root. Stopped and removed on drop.
pub struct PrivatePostgres {
    pub port: u16,
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
}

impl PrivatePostgres {
    /// Initialises and starts one, or returns `None` (with a message) when
    /// PostgreSQL's server programs are not installed and `CI` is not set.
    pub fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .flatten()
                    .map(|v| v.path().join("bin"))
                    .filter(|b| b.join("initdb").exists())
                    .max()
            });
        let Some(bin) = bin else {
            if std::env::var_os("CI").is_some() {
                panic!("PostgreSQL's server programs are required when CI is set");
            }
            eprintln!("SKIPPED: private PostgreSQL cluster: initdb not found");
            return None;
        };
        let cluster = Self {
            port: free_port(),
            dir: std::env::temp_dir().join(format!("tre-pg-{}", unique())),
            bin,
        };
        cluster.run(&format!(
            "{} -D {} -U postgres --auth=trust -N -E UTF8 --locale=C.UTF-8",
            cluster.bin.join("initdb").display(),
            cluster.dir.display()
        ));
        cluster.pg_ctl("start");
        Some(cluster)
    }

    /// Runs a shell command line, as `postgres` when we are root.
    fn run(&self, line: &str) {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let output = if root {
            Command::new("su").args(["postgres", "-c", line]).output()
        } else {
            Command::new("sh").args(["-c", line]).output()
        }
        .expect("run a PostgreSQL program");
        assert!(
            output.status.success(),
            "{line}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn pg_ctl(&self, action: &str) {
        self.run(&format!(
            "{} -D {dir} -w -t 60 -m fast -l {dir}/server.log -o '-c listen_addresses=127.0.0.1 -p {port} -k {dir} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200' {action}",
            self.bin.join("pg_ctl").display(),
            dir = self.dir.display(),
            port = self.port,
        ));
    }

    /// A database url of the cluster (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A fast restart (`pg_ctl restart -m fast`): every connection is
    /// terminated, as in a routine restart under running workers.
    pub fn restart(&self) {
        self.pg_ctl("restart");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Command::new("su")
            .args([
                "postgres",
                "-c",
                &format!(
                    "{} -D {} -m immediate stop",
                    self.bin.join("pg_ctl").display(),
                    self.dir.display()
                ),
            ])
            .output();
        let _ = Command::new(self.bin.join("pg_ctl"))
            .args([
                "-D",
                self.dir.to_str().unwrap_or("."),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
