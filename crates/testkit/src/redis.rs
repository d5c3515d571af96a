//! A `redis-server` of the test's own, on a free port.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A `redis-server` of the test's own (no persistence), stopped on drop.
pub struct TestRedis {
    pub port: u16,
    child: Option<Child>,
}

impl TestRedis {
    /// Starts one, or returns `None` (with a message) when `redis-server` is
    /// not installed and `CI` is not set.
    pub fn start() -> Option<Self> {
        let port = free_port();
        let mut redis = Self { port, child: None };
        match redis.spawn() {
            Ok(()) => Some(redis),
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("SKIPPED: Redis test: cannot start redis-server ({e})");
                None
            }
            Err(e) => panic!("redis-server is required when CI is set: {e}"),
        }
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(std::io::Error::other("redis-server did not start"))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (losing everything, as without persistence).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills and starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn().expect("restart redis-server");
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
