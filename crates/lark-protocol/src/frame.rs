//! The frame codec of Lark's long connection (lark-longconn.md §4), pure: the protobuf (proto2)
//! `pbbp2.Frame` every binary WebSocket message carries, and the few frames a client builds
//! (ping, reply). Hand-written with `prost` derive: Lark ships no `.proto`, and a build script
//! with `protoc` would cost more than these two structs.

use prost::Message as _;

/// `Frame.method` of control frames (ping, pong).
pub const METHOD_CONTROL: i32 = 0;
/// `Frame.method` of data frames (event, card).
pub const METHOD_DATA: i32 = 1;

/// One `key = value` pair of a frame's headers.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Header {
    /// Header name, e.g. `type`, `message_id`, `sum`, `seq`, `biz_rt`.
    #[prost(string, required, tag = "1")]
    pub key: String,
    /// Header value, always a string (numbers in decimal).
    #[prost(string, required, tag = "2")]
    pub value: String,
}

/// `pbbp2.Frame`. Fields 1–4 are proto2 `required`, so they are encoded even when zero (as the
/// Go SDK does); the optional fields are echoed exactly as received (`Some("")` is encoded,
/// `None` is not), which is what makes a reply byte-identical to the Go SDK's.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Frame {
    /// `SeqID`: echoed in the reply.
    #[prost(uint64, required, tag = "1")]
    pub seq_id: u64,
    /// `LogID`: echoed in the reply.
    #[prost(uint64, required, tag = "2")]
    pub log_id: u64,
    /// The connection's `service_id`, from the endpoint URL.
    #[prost(int32, required, tag = "3")]
    pub service: i32,
    /// [`METHOD_CONTROL`] or [`METHOD_DATA`].
    #[prost(int32, required, tag = "4")]
    pub method: i32,
    /// Headers in order; the `type` header says what the frame is.
    #[prost(message, repeated, tag = "5")]
    pub headers: Vec<Header>,
    /// Echoed as received.
    #[prost(string, optional, tag = "6")]
    pub payload_encoding: Option<String>,
    /// Echoed as received.
    #[prost(string, optional, tag = "7")]
    pub payload_type: Option<String>,
    /// The event JSON (data frames), ClientConfig JSON (pongs), or the reply payload.
    #[prost(bytes = "vec", optional, tag = "8")]
    pub payload: Option<Vec<u8>>,
    /// `LogIDNew`: echoed as received.
    #[prost(string, optional, tag = "9")]
    pub log_id_new: Option<String>,
}

/// The `type` header, as far as the client cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    /// `type=event`: a data frame carrying an event payload (or a fragment of one).
    Event,
    /// `type=card`: ignored, without a reply.
    Card,
    /// `type=ping`.
    Ping,
    /// `type=pong`: its payload may carry a [`ClientConfig`](crate::endpoint::ClientConfig).
    Pong,
    /// No `type` header, or one the client does not know.
    Other,
}

/// A binary message that is not a `Frame`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("not a long-connection frame: {0}")]
pub struct DecodeError(String);

impl Frame {
    /// Decode one binary WebSocket message. Accepts frames with or without the empty optional
    /// fields (the Go SDK writes them, the Node SDK does not).
    pub fn decode_bytes(buf: &[u8]) -> Result<Frame, DecodeError> {
        Frame::decode(buf).map_err(|e| DecodeError(e.to_string()))
    }

    /// Encode as protobuf, for a binary WebSocket message.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// The first header named `key`.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.key == key)
            .map(|h| h.value.as_str())
    }

    /// Replace the value of `key`, or append it when absent.
    pub fn set_header(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.headers.iter_mut().find(|h| h.key == key) {
            Some(h) => h.value = value,
            None => self.headers.push(Header {
                key: key.into(),
                value,
            }),
        }
    }

    /// What the frame is, from its `type` header.
    pub fn frame_type(&self) -> FrameType {
        match self.header("type") {
            Some("event") => FrameType::Event,
            Some("card") => FrameType::Card,
            Some("ping") => FrameType::Ping,
            Some("pong") => FrameType::Pong,
            _ => FrameType::Other,
        }
    }

    /// The ping the client sends right after connecting and then every `PingInterval`,
    /// encoded as the Go SDK encodes it.
    pub fn ping(service: i32) -> Frame {
        Frame {
            seq_id: 0,
            log_id: 0,
            service,
            method: METHOD_CONTROL,
            headers: vec![Header {
                key: "type".into(),
                value: "ping".into(),
            }],
            payload_encoding: Some(String::new()),
            payload_type: Some(String::new()),
            payload: None,
            log_id_new: Some(String::new()),
        }
    }

    /// The reply to a received data frame: the same frame (SeqID, LogID, service, method,
    /// headers in order, optional fields as received) with `biz_rt` (handling time in ms)
    /// appended and the response as payload.
    pub fn reply(received: &Frame, code: u16, biz_rt_ms: u64) -> Frame {
        let mut f = received.clone();
        f.headers.push(Header {
            key: "biz_rt".into(),
            value: biz_rt_ms.to_string(),
        });
        f.payload = Some(reply_payload(code));
        f
    }
}

/// `{"code":N,"headers":null,"data":null}`, as the Go SDK writes it.
pub fn reply_payload(code: u16) -> Vec<u8> {
    format!("{{\"code\":{code},\"headers\":null,\"data\":null}}").into_bytes()
}

/// The `code` of a reply payload (what Lark reads); `None` when it is not one.
pub fn reply_code(payload: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Reply {
        code: i64,
    }
    serde_json::from_slice::<Reply>(payload)
        .ok()
        .map(|r| r.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT_PAYLOAD: &str = r#"{"schema":"2.0","header":{"event_id":"ev_1","event_type":"im.message.receive_v1","create_time":"1735689600000","token":"","app_id":"cli_0000000000000001","tenant_key":"tk"},"event":{}}"#;
    const REPLY_HEX: &str = "0807100918f681801020012a0d0a047479706512056576656e742a130a0a6d6573736167655f696412056d73675f312a080a0373756d1201312a080a037365711201302a100a0874726163655f6964120474725f312a0b0a0662697a5f727412013332003a0042277b22636f6465223a3230302c2268656164657273223a6e756c6c2c2264617461223a6e756c6c7d4a00";
    const PING_HEX: &str = "0800100018f681801020002a0c0a0474797065120470696e6732003a004a00";

    fn h(k: &str, v: &str) -> Header {
        Header {
            key: k.into(),
            value: v.into(),
        }
    }

    /// The event frame of §5, optional fields as given.
    fn event_frame(optional: Option<String>) -> Frame {
        Frame {
            seq_id: 7,
            log_id: 9,
            service: 33554678,
            method: METHOD_DATA,
            headers: vec![
                h("type", "event"),
                h("message_id", "msg_1"),
                h("sum", "1"),
                h("seq", "0"),
                h("trace_id", "tr_1"),
            ],
            payload_encoding: optional.clone(),
            payload_type: optional.clone(),
            payload: Some(EVENT_PAYLOAD.as_bytes().to_vec()),
            log_id_new: optional,
        }
    }

    #[test]
    fn reply_matches_the_go_sdk_bytes() {
        let reply = Frame::reply(&event_frame(Some(String::new())), 200, 3);
        let bytes = reply.to_bytes();
        assert_eq!(bytes.len(), 145);
        assert_eq!(hex::encode(&bytes), REPLY_HEX);
    }

    #[test]
    fn ping_matches_the_go_sdk_bytes() {
        assert_eq!(hex::encode(Frame::ping(33554678).to_bytes()), PING_HEX);
    }

    #[test]
    fn required_fields_are_encoded_when_zero() {
        let f = Frame {
            seq_id: 0,
            log_id: 0,
            service: 0,
            method: 0,
            ..Default::default()
        };
        assert_eq!(hex::encode(f.to_bytes()), "0800100018002000");
    }

    #[test]
    fn decodes_with_the_empty_optional_fields() {
        let bytes = hex::decode(REPLY_HEX).unwrap();
        let f = Frame::decode_bytes(&bytes).unwrap();
        assert_eq!(
            (f.seq_id, f.log_id, f.service, f.method),
            (7, 9, 33554678, 1)
        );
        assert_eq!(f.payload_encoding.as_deref(), Some(""));
        assert_eq!(f.payload_type.as_deref(), Some(""));
        assert_eq!(f.log_id_new.as_deref(), Some(""));
        assert_eq!(f.header("biz_rt"), Some("3"));
        assert_eq!(f.frame_type(), FrameType::Event);
        assert_eq!(reply_code(f.payload.as_deref().unwrap()), Some(200));
        let ping = Frame::decode_bytes(&hex::decode(PING_HEX).unwrap()).unwrap();
        assert_eq!(ping, Frame::ping(33554678));
        assert_eq!(ping.frame_type(), FrameType::Ping);
        assert_eq!(ping.payload, None);
    }

    #[test]
    fn decodes_without_the_optional_fields_and_echoes_them_as_received() {
        // As the Node SDK encodes it: fields 6, 7 and 9 absent.
        let node = event_frame(None);
        let bytes = node.to_bytes();
        assert!(!hex::encode(&bytes).contains("3200"), "field 6 omitted");
        let f = Frame::decode_bytes(&bytes).unwrap();
        assert_eq!(f, node);
        assert_eq!(f.payload_encoding, None);
        assert_eq!(f.header("message_id"), Some("msg_1"));
        assert_eq!(f.payload.as_deref(), Some(EVENT_PAYLOAD.as_bytes()));
        // The reply keeps them absent: 145 bytes less the three empty fields.
        let reply = Frame::reply(&f, 200, 3).to_bytes();
        assert_eq!(reply.len(), 145 - 6);
        let expected = REPLY_HEX.replacen("32003a00", "", 1);
        let expected = expected.strip_suffix("4a00").unwrap();
        assert_eq!(hex::encode(reply), expected);
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(Frame::decode_bytes(b"\xff\xff\xff\xff").is_err());
        assert!(Frame::decode_bytes(b"not a frame at all").is_err());
    }

    #[test]
    fn headers_are_read_and_replaced_in_place() {
        let mut f = event_frame(None);
        assert_eq!(f.header("trace_id"), Some("tr_1"));
        assert_eq!(f.header("nope"), None);
        f.set_header("sum", "3");
        f.set_header("x", "y");
        assert_eq!(f.headers[2], h("sum", "3"));
        assert_eq!(f.headers.last(), Some(&h("x", "y")));
    }

    #[test]
    fn reply_codes_are_written_and_read() {
        assert_eq!(
            reply_payload(500),
            br#"{"code":500,"headers":null,"data":null}"#.to_vec()
        );
        assert_eq!(reply_code(br#"{"code":200}"#), Some(200));
        assert_eq!(reply_code(b"nope"), None);
    }
}
