//! The upstream answer cache: TTLs honoured, size bounded, failures never kept.
use std::{
    net::Ipv4Addr,
    str::FromStr,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, OpCode, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata::A},
};

use super::{Cache, Key};

fn key(name: &str) -> Key {
    (name.to_string(), u16::from(RecordType::A), 1)
}

fn answer(name: &str, ttl: u32) -> Message {
    let mut m = Message::response(7, OpCode::Query);
    let name = Name::from_str(name).expect("test name");
    m.add_answer(Record::from_rdata(
        name,
        ttl,
        RData::A(A(Ipv4Addr::new(198, 18, 9, 9))),
    ));
    m
}

#[test]
fn answers_live_as_long_as_their_ttl_and_age_while_kept() {
    let mut cache = Cache::new(10);
    let t0 = Instant::now();
    cache.insert(key("a.test"), &answer("a.test.", 60), t0);
    let later = cache
        .get(&key("a.test"), t0 + Duration::from_secs(20))
        .expect("still fresh");
    assert_eq!(later.answers[0].ttl, 40);
    assert!(
        cache
            .get(&key("a.test"), t0 + Duration::from_secs(60))
            .is_none()
    );
    assert!(cache.is_empty(), "an expired entry is dropped when met");
}

#[test]
fn the_cache_never_holds_more_than_its_capacity() {
    let mut cache = Cache::new(100);
    let t0 = Instant::now();
    for i in 0..10_000 {
        let name = format!("n{i}.test");
        cache.insert(key(&name), &answer(&format!("{name}."), 300), t0);
        assert!(cache.len() <= 100);
    }
    assert!(cache.get(&key("n9999.test"), t0).is_some(), "newest kept");
    assert!(cache.get(&key("n0.test"), t0).is_none(), "oldest evicted");
    assert!(cache.order.len() <= 200, "the order queue is bounded too");
}

#[test]
fn failures_truncated_and_zero_ttl_answers_are_not_kept() {
    let mut cache = Cache::new(10);
    let t0 = Instant::now();
    let mut servfail = answer("s.test.", 60);
    servfail.metadata.response_code = ResponseCode::ServFail;
    cache.insert(key("s.test"), &servfail, t0);
    let mut truncated = answer("t.test.", 60);
    truncated.metadata.truncation = true;
    cache.insert(key("t.test"), &truncated, t0);
    cache.insert(key("z.test"), &answer("z.test.", 0), t0);
    assert!(cache.is_empty());
}

#[test]
fn nxdomain_is_kept_for_a_while() {
    let mut cache = Cache::new(10);
    let t0 = Instant::now();
    let nx = Message::error_msg(1, OpCode::Query, ResponseCode::NXDomain);
    cache.insert(key("nx.test"), &nx, t0);
    let hit = cache
        .get(&key("nx.test"), t0)
        .expect("negative answer kept");
    assert_eq!(hit.metadata.response_code, ResponseCode::NXDomain);
}
