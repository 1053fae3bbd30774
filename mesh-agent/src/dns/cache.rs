//! The answers of upstream resolvers, kept as long as their TTLs say and no longer, in a
//! map of bounded size: a pod asking a million distinct names cannot grow the agent.
//!
//! When full, expired entries go first, then the oldest inserted (FIFO: cheap, and a name
//! asked often is re-inserted as soon as it expires anyway).
use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

/// Longest time an answer is kept, whatever its TTL says.
const MAX_TTL: u32 = 3600;
/// How long a negative answer (NXDOMAIN, or no records) is kept when the upstream gave no
/// SOA to say (RFC 2308's SOA minimum is the usual source).
const DEFAULT_NEGATIVE_TTL: u32 = 30;

/// Name (lowercase, no trailing dot), type, class.
pub type Key = (String, u16, u16);

struct Entry {
    response: Message,
    stored: Instant,
    ttl: Duration,
}

pub struct Cache {
    capacity: usize,
    entries: HashMap<Key, Entry>,
    /// Keys in insertion order; may hold keys already replaced or removed (skipped when
    /// popped), compacted when it grows past twice the capacity.
    order: VecDeque<Key>,
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Cache {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A stored answer with its TTLs lowered by the time it spent here.
    pub fn get(&mut self, key: &Key, now: Instant) -> Option<Message> {
        let entry = self.entries.get(key)?;
        let age = now.saturating_duration_since(entry.stored);
        if age >= entry.ttl {
            self.entries.remove(key);
            return None;
        }
        let elapsed = u32::try_from(age.as_secs()).unwrap_or(u32::MAX);
        let mut response = entry.response.clone();
        for record in response
            .answers
            .iter_mut()
            .chain(response.authorities.iter_mut())
            .chain(response.additionals.iter_mut())
        {
            record.ttl = record.ttl.saturating_sub(elapsed);
        }
        Some(response)
    }

    /// Keeps `response` if it may be kept (NOERROR or NXDOMAIN, not truncated, TTL > 0).
    pub fn insert(&mut self, key: Key, response: &Message, now: Instant) {
        let Some(ttl) = cacheable_ttl(response) else {
            return;
        };
        if self.capacity == 0 {
            return;
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.entries
                .retain(|_, e| now.saturating_duration_since(e.stored) < e.ttl);
            while self.entries.len() >= self.capacity {
                let Some(oldest) = self.order.pop_front() else {
                    break;
                };
                self.entries.remove(&oldest);
            }
        }
        let mut stored = response.clone();
        // EDNS belongs to one exchange, never to a cached answer (RFC 6891).
        stored.edns = None;
        self.entries.insert(
            key.clone(),
            Entry {
                response: stored,
                stored: now,
                ttl: Duration::from_secs(u64::from(ttl)),
            },
        );
        self.order.push_back(key);
        if self.order.len() > self.capacity.saturating_mul(2) {
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
    }
}

/// How long an answer may be kept: the smallest TTL among its records (negative answers:
/// the SOA's minimum), capped; `None` for what must not be kept.
fn cacheable_ttl(response: &Message) -> Option<u32> {
    if response.metadata.truncation {
        return None;
    }
    let code = response.metadata.response_code;
    let negative = code == ResponseCode::NXDomain || response.answers.is_empty();
    if code != ResponseCode::NoError && code != ResponseCode::NXDomain {
        return None;
    }
    let ttl = if negative {
        response
            .authorities
            .iter()
            .find(|r| r.record_type() == RecordType::SOA)
            .map(|soa| match &soa.data {
                hickory_proto::rr::RData::SOA(data) => soa.ttl.min(data.minimum),
                _ => soa.ttl,
            })
            .unwrap_or(DEFAULT_NEGATIVE_TTL)
    } else {
        response.answers.iter().map(|r| r.ttl).min().unwrap_or(0)
    };
    (ttl > 0).then_some(ttl.min(MAX_TTL))
}

#[cfg(test)]
mod tests;
