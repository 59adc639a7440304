//! Reassembly of fragmented event payloads (lark-longconn.md §4), pure: the caller passes the
//! time in. Fragments are collected by `message_id` into `sum` slots at index `seq`; an
//! incomplete message is dropped after the fragment timeout. What the peer can make us hold is
//! bounded as a whole, not only the payload bytes: every message costs its id and a fixed
//! overhead, every fragment its bytes and a fixed overhead, and there are at most
//! `max_messages` incomplete messages (the oldest goes first). Every fragment costs O(1)
//! amortized (plus O(log k) among the k fragments of its own message): expiry and the next
//! deadline come from a queue kept in arrival order, never from a scan of all messages, so a
//! flood of distinct ids cannot turn each frame into a walk over the others (issue 15 item 13).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one message costs on top of its id and fragments: the map entries, the queue slot.
pub const MESSAGE_OVERHEAD: usize = 192;
/// What one fragment costs on top of its bytes: its slot in the message.
pub const FRAGMENT_OVERHEAD: usize = 64;
/// Default cap on incomplete messages (and, separately, on remembered dropped ones).
pub const DEFAULT_MAX_MESSAGES: usize = 1024;

/// What one fragment did.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    /// The message is complete: the payload, in order.
    Complete(Vec<u8>),
    /// More fragments are needed.
    Pending,
    /// The message alone would exceed the bound: it was dropped.
    DroppedSize,
    /// A later fragment of a message already dropped for size: ignored.
    AlreadyDropped,
    /// `seq` is not below `sum`, or `sum` differs from the message's earlier fragments.
    Invalid(&'static str),
}

struct Partial {
    id: Arc<str>,
    sum: usize,
    parts: BTreeMap<usize, Vec<u8>>,
    /// What this message counts against the bound: id, overheads, payload bytes.
    cost: usize,
}

/// Collects the fragments of split event payloads until each message is complete, times out or
/// is dropped for size.
pub struct Reassembler {
    timeout: Duration,
    max_bytes: usize,
    max_messages: usize,
    held: usize,
    next_key: u64,
    /// Incomplete messages by key; `index` finds the key of an id.
    pending: HashMap<u64, Partial>,
    index: HashMap<Arc<str>, u64>,
    /// Keys in arrival (hence start-time) order; may hold keys already gone (completed or
    /// evicted), skipped when they reach the front and compacted when they pile up.
    order: VecDeque<(u64, Instant)>,
    /// Messages dropped for size, until their timeout, by a keyed hash of their id (8 bytes
    /// whatever the id's length): their remaining fragments are ignored instead of starting a
    /// new message that could only time out. At most `max_messages`, oldest forgotten first.
    dropped: HashMap<u64, Instant>,
    dropped_order: VecDeque<(u64, Instant)>,
    hasher: RandomState,
    evicted: usize,
}

impl Reassembler {
    /// A reassembler that drops incomplete messages after `timeout` and holds at most
    /// `max_bytes` (ids and overheads counted) in at most [`DEFAULT_MAX_MESSAGES`] messages.
    pub fn new(timeout: Duration, max_bytes: usize) -> Reassembler {
        Reassembler::with_max_messages(timeout, max_bytes, DEFAULT_MAX_MESSAGES)
    }

    /// [`Reassembler::new`] with its own cap on incomplete messages (at least 1).
    pub fn with_max_messages(
        timeout: Duration,
        max_bytes: usize,
        max_messages: usize,
    ) -> Reassembler {
        Reassembler {
            timeout,
            max_bytes,
            max_messages: max_messages.max(1),
            held: 0,
            next_key: 0,
            pending: HashMap::new(),
            index: HashMap::new(),
            order: VecDeque::new(),
            dropped: HashMap::new(),
            dropped_order: VecDeque::new(),
            hasher: RandomState::new(),
            evicted: 0,
        }
    }

    /// What incomplete messages count against the bound: payload bytes, ids and overheads.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// Incomplete messages.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Messages dropped for size remembered (until their timeout).
    pub fn tombstones(&self) -> usize {
        self.dropped.len()
    }

    /// Incomplete messages evicted (the oldest first) to make room for newer ones since the
    /// last call; resets the count.
    pub fn take_evicted(&mut self) -> usize {
        std::mem::take(&mut self.evicted)
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
        let hash = self.hasher.hash_one(message_id);
        if self.dropped.contains_key(&hash) {
            return Added::AlreadyDropped;
        }
        let key = match self.index.get(message_id) {
            Some(&k) => k,
            None => {
                let cost = MESSAGE_OVERHEAD + message_id.len();
                if cost + FRAGMENT_OVERHEAD + data.len() > self.max_bytes {
                    self.tombstone(hash, now);
                    return Added::DroppedSize;
                }
                self.make_room(cost, 1);
                let key = self.next_key;
                self.next_key += 1;
                let id: Arc<str> = Arc::from(message_id);
                self.index.insert(id.clone(), key);
                self.pending.insert(
                    key,
                    Partial {
                        id,
                        sum,
                        parts: BTreeMap::new(),
                        cost,
                    },
                );
                self.order.push_back((key, now));
                self.held += cost;
                key
            }
        };
        let Some(p) = self.pending.get(&key) else {
            return Added::Invalid("fragment bookkeeping lost its message");
        };
        if p.sum != sum {
            return Added::Invalid("fragment sum differs from the message's other fragments");
        }
        // A repeated fragment replaces the earlier copy.
        let replaced = p.parts.get(&seq).map_or(0, |d| d.len() + FRAGMENT_OVERHEAD);
        let added = data.len() + FRAGMENT_OVERHEAD;
        let cost_after = p.cost - replaced + added;
        if cost_after > self.max_bytes {
            self.remove(key);
            self.tombstone(hash, now);
            return Added::DroppedSize;
        }
        // Older messages make way for this one (never this one itself).
        self.make_room_except(added.saturating_sub(replaced), key);
        let Some(p) = self.pending.get_mut(&key) else {
            return Added::Invalid("fragment bookkeeping lost its message");
        };
        self.held = self.held - replaced + added;
        p.cost = cost_after;
        p.parts.insert(seq, data);
        if p.parts.len() < p.sum {
            return Added::Pending;
        }
        let Some(p) = self.remove(key) else {
            return Added::Pending;
        };
        let bytes = p.parts.values().map(Vec::len).sum();
        let mut out = Vec::with_capacity(bytes);
        for part in p.parts.into_values() {
            out.extend_from_slice(&part);
        }
        Added::Complete(out)
    }

    /// Evict the oldest messages until `extra` more bytes and `messages` more messages fit.
    fn make_room(&mut self, extra: usize, messages: usize) {
        while self.pending.len() + messages > self.max_messages
            || (self.held + extra > self.max_bytes && !self.pending.is_empty())
        {
            if !self.evict_oldest(None) {
                break;
            }
        }
    }

    fn make_room_except(&mut self, extra: usize, keep: u64) {
        while self.held + extra > self.max_bytes {
            if !self.evict_oldest(Some(keep)) {
                break;
            }
        }
    }

    /// Evict the oldest incomplete message other than `keep`; `false` when there is none.
    fn evict_oldest(&mut self, keep: Option<u64>) -> bool {
        let mut skipped = None;
        while let Some((k, at)) = self.order.pop_front() {
            if Some(k) == keep {
                skipped = Some((k, at));
                continue;
            }
            if self.remove(k).is_some() {
                self.evicted += 1;
                if let Some(s) = skipped {
                    self.order.push_front(s);
                }
                return true;
            }
        }
        if let Some(s) = skipped {
            self.order.push_front(s);
        }
        false
    }

    fn remove(&mut self, key: u64) -> Option<Partial> {
        let p = self.pending.remove(&key)?;
        self.index.remove(&p.id);
        self.held -= p.cost;
        // Completed and evicted messages leave their keys in `order`; compact when those
        // outnumber the live ones, so the queue stays O(live) and each key is moved O(1) times.
        if self.order.len() > 2 * self.pending.len() + 64 {
            let pending = &self.pending;
            self.order.retain(|(k, _)| pending.contains_key(k));
        }
        Some(p)
    }

    fn tombstone(&mut self, hash: u64, now: Instant) {
        while self.dropped.len() >= self.max_messages {
            match self.dropped_order.pop_front() {
                Some((h, _)) => {
                    self.dropped.remove(&h);
                }
                None => break,
            }
        }
        self.dropped.insert(hash, now);
        self.dropped_order.push_back((hash, now));
    }

    /// Drop messages older than the timeout; returns how many incomplete messages went.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some(&(k, at)) = self.order.front() {
            let live = self.pending.contains_key(&k);
            if live && now.saturating_duration_since(at) < self.timeout {
                break;
            }
            self.order.pop_front();
            if live && self.remove(k).is_some() {
                n += 1;
            }
        }
        while let Some(&(h, at)) = self.dropped_order.front() {
            if now.saturating_duration_since(at) < self.timeout {
                break;
            }
            self.dropped_order.pop_front();
            if self.dropped.get(&h) == Some(&at) {
                self.dropped.remove(&h);
            }
        }
        n
    }

    /// When the oldest incomplete message (or tombstone) expires, if any. The front of the
    /// queue may be a message already gone: the wake-up is then early and harmless.
    pub fn next_deadline(&self) -> Option<Instant> {
        let a = self.order.front().map(|(_, t)| *t);
        let b = self.dropped_order.front().map(|(_, t)| *t);
        let t = match (a, b) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(t.checked_add(self.timeout).unwrap_or(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a message with a one-byte id and fragments of these sizes costs.
    fn cost(parts: &[usize]) -> usize {
        MESSAGE_OVERHEAD + 1 + parts.iter().map(|n| n + FRAGMENT_OVERHEAD).sum::<usize>()
    }

    fn r() -> Reassembler {
        Reassembler::new(Duration::from_secs(5), 10_000)
    }

    #[test]
    fn fragments_in_any_order_make_one_payload() {
        let mut a = r();
        let t = Instant::now();
        assert_eq!(a.add("m", 3, 2, b"ef".to_vec(), t), Added::Pending);
        assert_eq!(a.add("m", 3, 0, b"ab".to_vec(), t), Added::Pending);
        assert_eq!(a.held_bytes(), cost(&[2, 2]));
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
        assert_eq!(a.held_bytes(), cost(&[1]));
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
        assert_eq!((a.held_bytes(), a.pending()), (cost(&[2]), 1));
        // A late fragment of the expired message starts over.
        assert_eq!(
            a.add("m", 2, 1, b"b".to_vec(), t + Duration::from_secs(6)),
            Added::Pending
        );
    }

    #[test]
    fn the_byte_bound_drops_the_message_that_would_pass_it() {
        let limit = cost(&[6, 5]) - 1;
        let mut a = Reassembler::new(Duration::from_secs(5), limit);
        let t = Instant::now();
        assert_eq!(a.add("m", 3, 0, b"123456".to_vec(), t), Added::Pending);
        assert_eq!(a.add("m", 3, 1, b"12345".to_vec(), t), Added::DroppedSize);
        assert_eq!((a.held_bytes(), a.pending(), a.tombstones()), (0, 0, 1));
        assert_eq!(a.add("m", 3, 2, b"1".to_vec(), t), Added::AlreadyDropped);
        assert_eq!(a.add("n", 2, 0, b"12".to_vec(), t), Added::Pending);
        assert_eq!(
            a.add("n", 2, 1, b"3".to_vec(), t),
            Added::Complete(b"123".to_vec())
        );
        a.expire(t + Duration::from_secs(5));
        assert_eq!(a.next_deadline(), None, "tombstone expired too");
        assert_eq!(a.tombstones(), 0);
    }

    /// Issue 15 item 13: 256 KiB ids with empty payloads once held 694 MiB under a 1 MiB
    /// bound; the id is part of the cost now.
    #[test]
    fn ids_count_against_the_bound() {
        let mut a = Reassembler::new(Duration::from_secs(5), 1 << 20);
        let t = Instant::now();
        for i in 0..100u8 {
            let id = format!("{i:03}{}", "x".repeat(256 * 1024));
            assert_eq!(a.add(&id, 2, 0, Vec::new(), t), Added::Pending);
            assert!(a.held_bytes() <= 1 << 20, "{}", a.held_bytes());
        }
        assert_eq!(a.pending(), 3, "only what fits");
        assert_eq!(a.take_evicted(), 97, "the oldest made room");
        // An id larger than the bound is dropped at once, and remembered in 8 bytes.
        let huge = "y".repeat(2 << 20);
        assert_eq!(a.add(&huge, 2, 0, Vec::new(), t), Added::DroppedSize);
        assert_eq!(a.add(&huge, 2, 1, Vec::new(), t), Added::AlreadyDropped);
    }

    /// Issue 15 item 13: ~49k distinct ids once cost 17.5 s of CPU (every frame scanned every
    /// pending message); now a cap on messages, and O(1) per fragment.
    #[test]
    fn a_flood_of_distinct_ids_is_capped_and_cheap() {
        let mut a = Reassembler::new(Duration::from_secs(5), 1 << 20);
        let t = Instant::now();
        let started = Instant::now();
        for i in 0..200_000u32 {
            a.add(&format!("f{i}"), 2, 0, b"x".to_vec(), t);
            let _ = a.next_deadline();
            a.expire(t);
        }
        assert!(a.pending() <= DEFAULT_MAX_MESSAGES);
        assert!(a.held_bytes() <= 1 << 20);
        assert_eq!(a.take_evicted(), 200_000 - DEFAULT_MAX_MESSAGES);
        assert!(a.order.len() <= 2 * a.pending() + 65, "{}", a.order.len());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // A real message still completes right after the flood.
        assert_eq!(a.add("real", 2, 0, b"a".to_vec(), t), Added::Pending);
        assert_eq!(
            a.add("real", 2, 1, b"b".to_vec(), t),
            Added::Complete(b"ab".to_vec())
        );
        assert_eq!(
            a.expire(t + Duration::from_secs(5)),
            DEFAULT_MAX_MESSAGES - 1
        );
        assert_eq!(
            (a.pending(), a.held_bytes(), a.next_deadline()),
            (0, 0, None)
        );
    }

    #[test]
    fn tombstones_are_capped() {
        let mut a = Reassembler::with_max_messages(Duration::from_secs(5), 300, 4);
        let t = Instant::now();
        for i in 0..100 {
            assert_eq!(
                a.add(&format!("big{i}"), 2, 0, vec![0; 400], t),
                Added::DroppedSize
            );
        }
        assert_eq!(a.tombstones(), 4);
        assert_eq!(a.add("big99", 2, 1, Vec::new(), t), Added::AlreadyDropped);
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
