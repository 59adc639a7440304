//! The long-connection entrance (issue 9): Lark's WebSocket delivery, as lark-longconn.md
//! describes it. `frame`, `endpoint` and `fragments` are the protocol, pure; `longconn` is the
//! client that dials Lark and hands events to the same pipeline as the webhook.

pub mod endpoint;
pub mod fragments;
pub mod frame;
pub mod longconn;

pub use longconn::LongConn;
