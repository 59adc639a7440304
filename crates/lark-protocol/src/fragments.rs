//! Reassembly of fragmented event payloads (lark-longconn.md §4), pure: the caller passes the
//! time in. Fragments are collected by `message_id` into `sum` slots at index `seq`; an
//! incomplete message is dropped after the fragment timeout, and the bytes held across all
//! incomplete messages are bounded (our rule: by the webhook body limit) so that a stream of
//! fragments that never completes cannot grow memory without bound.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// What one fragment did.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    /// The message is complete: the payload, in order.
    Complete(Vec<u8>),
    /// More fragments are needed.
    Pending,
    /// Holding this fragment would exceed the byte bound: the whole message was dropped.
    DroppedSize,
    /// A later fragment of a message already dropped for size: ignored.
    AlreadyDropped,
    /// `seq` is not below `sum`, or `sum` differs from the message's earlier fragments.
    Invalid(&'static str),
}

struct Partial {
    sum: usize,
    parts: BTreeMap<usize, Vec<u8>>,
    bytes: usize,
    started: Instant,
}

/// Collects the fragments of split event payloads until each message is complete, times out or
/// is dropped for size.
pub struct Reassembler {
    timeout: Duration,
    max_bytes: usize,
    held: usize,
    pending: HashMap<String, Partial>,
    /// Messages dropped for size, until their timeout: their remaining fragments are ignored
    /// instead of starting a new message that could only time out.
    dropped: HashMap<String, Instant>,
}

impl Reassembler {
    /// A reassembler that drops incomplete messages after `timeout` and holds at most
    /// `max_bytes` across all of them.
    pub fn new(timeout: Duration, max_bytes: usize) -> Reassembler {
        Reassembler {
            timeout,
            max_bytes,
            held: 0,
            pending: HashMap::new(),
            dropped: HashMap::new(),
        }
    }

    /// Bytes held in incomplete messages.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// Incomplete messages.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Add fragment `seq` of `sum` (`sum` > 1) of `message_id`.
    pub fn add(
        &mut self,
        message_id: &str,
        sum: usize,
        seq: usize,
        data: Vec<u8>,
        now: Instant,
    ) -> Added {
        if seq >= sum {
            return Added::Invalid("fragment seq is not below sum");
        }
        if self.dropped.contains_key(message_id) {
            return Added::AlreadyDropped;
        }
        let p = self
            .pending
            .entry(message_id.to_string())
            .or_insert_with(|| Partial {
                sum,
                parts: BTreeMap::new(),
                bytes: 0,
                started: now,
            });
        if p.sum != sum {
            return Added::Invalid("fragment sum differs from the message's other fragments");
        }
        // A repeated fragment replaces the earlier copy.
        let replaced = p.parts.get(&seq).map_or(0, Vec::len);
        let held_after = self.held - replaced + data.len();
        if held_after > self.max_bytes {
            let bytes = p.bytes;
            self.pending.remove(message_id);
            self.held -= bytes;
            self.dropped.insert(message_id.to_string(), now);
            return Added::DroppedSize;
        }
        self.held = held_after;
        p.bytes = p.bytes - replaced + data.len();
        p.parts.insert(seq, data);
        if p.parts.len() < p.sum {
            return Added::Pending;
        }
        let Some(p) = self.pending.remove(message_id) else {
            return Added::Pending;
        };
        self.held -= p.bytes;
        let mut out = Vec::with_capacity(p.bytes);
        for part in p.parts.into_values() {
            out.extend_from_slice(&part);
        }
        Added::Complete(out)
    }

    /// Drop messages older than the timeout; returns how many incomplete messages went.
    pub fn expire(&mut self, now: Instant) -> usize {
        let timeout = self.timeout;
        let before = self.pending.len();
        let mut freed = 0;
        self.pending.retain(|_, p| {
            let keep = now.duration_since(p.started) < timeout;
            if !keep {
                freed += p.bytes;
            }
            keep
        });
        self.held -= freed;
        self.dropped
            .retain(|_, at| now.duration_since(*at) < timeout);
        before - self.pending.len()
    }

    /// When the oldest incomplete message (or tombstone) expires, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|p| p.started)
            .chain(self.dropped.values().copied())
            .min()
            .map(|t| t + self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Reassembler {
        Reassembler::new(Duration::from_secs(5), 10)
    }

    #[test]
    fn fragments_in_any_order_make_one_payload() {
        let mut a = r();
        let t = Instant::now();
        assert_eq!(a.add("m", 3, 2, b"ef".to_vec(), t), Added::Pending);
        assert_eq!(a.add("m", 3, 0, b"ab".to_vec(), t), Added::Pending);
        assert_eq!(a.held_bytes(), 4);
        assert_eq!(
            a.add("m", 3, 1, b"cd".to_vec(), t),
            Added::Complete(b"abcdef".to_vec())
        );
        assert_eq!((a.held_bytes(), a.pending()), (0, 0));
    }

    #[test]
    fn a_repeated_fragment_replaces_the_first_copy() {
        let mut a = r();
        let t = Instant::now();
        assert_eq!(a.add("m", 2, 0, b"xx".to_vec(), t), Added::Pending);
        assert_eq!(a.add("m", 2, 0, b"a".to_vec(), t), Added::Pending);
        assert_eq!(a.held_bytes(), 1);
        assert_eq!(
            a.add("m", 2, 1, b"b".to_vec(), t),
            Added::Complete(b"ab".to_vec())
        );
    }

    #[test]
    fn incomplete_messages_expire() {
        let mut a = r();
        let t = Instant::now();
        a.add("m", 2, 0, b"ab".to_vec(), t);
        a.add("n", 2, 0, b"cd".to_vec(), t + Duration::from_secs(3));
        assert_eq!(a.next_deadline(), Some(t + Duration::from_secs(5)));
        assert_eq!(a.expire(t + Duration::from_secs(4)), 0);
        assert_eq!(a.expire(t + Duration::from_secs(5)), 1);
        assert_eq!((a.held_bytes(), a.pending()), (2, 1));
        // A late fragment of the expired message starts over.
        assert_eq!(
            a.add("m", 2, 1, b"b".to_vec(), t + Duration::from_secs(6)),
            Added::Pending
        );
    }

    #[test]
    fn the_byte_bound_drops_the_message_that_would_pass_it() {
        let mut a = r();
        let t = Instant::now();
        assert_eq!(a.add("m", 3, 0, b"123456".to_vec(), t), Added::Pending);
        assert_eq!(a.add("n", 2, 0, b"12".to_vec(), t), Added::Pending);
        assert_eq!(a.add("m", 3, 1, b"12345".to_vec(), t), Added::DroppedSize);
        assert_eq!((a.held_bytes(), a.pending()), (2, 1));
        assert_eq!(a.add("m", 3, 2, b"1".to_vec(), t), Added::AlreadyDropped);
        assert_eq!(
            a.add("n", 2, 1, b"3".to_vec(), t),
            Added::Complete(b"123".to_vec())
        );
        a.expire(t + Duration::from_secs(5));
        assert_eq!(a.next_deadline(), None, "tombstone expired too");
    }

    #[test]
    fn inconsistent_fragments_are_invalid() {
        let mut a = r();
        let t = Instant::now();
        assert!(matches!(
            a.add("m", 2, 2, b"a".to_vec(), t),
            Added::Invalid(_)
        ));
        a.add("m", 2, 0, b"a".to_vec(), t);
        assert!(matches!(
            a.add("m", 3, 1, b"a".to_vec(), t),
            Added::Invalid(_)
        ));
    }
}
