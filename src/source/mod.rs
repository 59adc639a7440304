//! The long-connection entrance (issue 9): Lark's WebSocket delivery, as lark-longconn.md
//! describes it. The protocol (frames, discovery answers, fragments) is pure and lives in
//! `lark_protocol`; `longconn` is the client that dials Lark and hands events to the same
//! pipeline as the webhook.

pub mod longconn;

pub use longconn::LongConn;
