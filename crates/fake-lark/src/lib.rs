//! Lark's side, for tests, demos and benchmarks — never linked into the product binary:
//!
//! - [`longconn`]: a fake of Lark's long-connection server (discovery + WebSocket), also the
//!   `fake-lark` binary for trying `source.kind = "long_connection"` without a Lark account;
//! - [`openapi`]: a fake of the open API the bridge calls (tenant token, helpdesk
//!   subscription, ticket detail), served by the same server;
//! - [`load`]: the load generator behind the `lark-load` binary (benchmarks, fault soak);
//! - [`sink`]: a channel-backed sink that can inject faults a real broker can't make on cue;
//! - [`kit`]: the test kit — brokers and stores on free loopback ports, a bridge in-process,
//!   Lark's requests with real encryption and signatures, schema validators.

pub mod kit;
pub mod load;
pub mod longconn;
pub mod openapi;
pub mod sink;
