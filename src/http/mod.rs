//! The HTTP entrances: the webhook ingress (Lark → pipeline) and the admin listener.

pub mod admin;
pub mod ingress;
pub mod server;
