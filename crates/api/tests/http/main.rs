//! The API over real HTTP: a server on a random port, a real client, a real
//! database (PostgreSQL when it answers, else SQLite). One test binary, a
//! module per concern.

#[path = "../support/mod.rs"]
mod support;

mod authorization;
mod authorization_first;
mod errors;
mod files;
mod idempotency;
mod inventory;
mod lifecycle;
mod operations;
mod oversight;
mod policies;
