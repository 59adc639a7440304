//! HTTP plumbing: the accept loop with its connection and head limits ([`server`]) that serves
//! the webhook entrance, and the admin listener ([`admin`]: health, readiness, metrics).

pub mod admin;
pub mod server;
