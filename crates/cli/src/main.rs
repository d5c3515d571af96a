//! The `tre` binary (see the library for its commands).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    tre_cli::main().await
}
