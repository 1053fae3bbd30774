//! One query in, one answer out: resolv.conf parsing, and `handle` fed mutated and random
//! packets (a small in-process fuzzer: it must never panic, and every answer it gives
//! parses and carries the query's id).
use std::{collections::BTreeMap, sync::Arc};

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{Name, RecordType},
};
use mesh_config::ConfigStore;

use super::{NodeDns, PodDns, Transport, parse_resolv_conf, upstream::Forwarder};

#[test]
fn resolv_conf_nameservers_become_upstreams() {
    let text = "# comment\nsearch default.svc.cluster.local\nnameserver 198.18.1.13\nnameserver fd00::53\nnameserver fe80::1%eth0\noptions ndots:5\n";
    let got: Vec<String> = parse_resolv_conf(text)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(got, ["198.18.1.13:53", "[fd00::53]:53"]);
}

fn pod() -> PodDns {
    let store = Arc::new(ConfigStore::default());
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\nspec:\n  clusterIP: 198.19.0.10\n  ports: [{port: 9080}]\n";
    let loaded = mesh_config::load_str(yaml, None).expect("test YAML");
    let update = mesh_config::store::UnitUpdate {
        unit: "t.yaml".into(),
        change: mesh_config::store::UnitChange::Set(loaded.objects),
    };
    store.apply("test", vec![update]).expect("applies");
    let node = Arc::new(NodeDns {
        config: store,
        cluster_domain: "cluster.local".into(),
        // No upstream: forwarded names fail at once (SERVFAIL), no network.
        forwarder: Forwarder::new(Vec::new(), 16),
        metrics: Default::default(),
    });
    PodDns::new("default/p".into(), "default".into(), &BTreeMap::new(), node)
}

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    m.to_vec().expect("encodes")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn services_are_answered_and_unknown_cluster_names_are_nxdomain() {
    let pod = pod();
    let rt = runtime();
    let ask = |name: &str, qtype| {
        let answer = rt
            .block_on(pod.handle(&query(name, qtype), Transport::Udp))
            .expect("an answer");
        Message::from_vec(&answer).expect("parses")
    };
    let a = ask("reviews.", RecordType::A);
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a.answers.len(), 1);
    assert!(a.metadata.authoritative);
    let aaaa = ask("reviews.default.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
    assert!(aaaa.answers.is_empty(), "an IPv4 VIP has no AAAA: NODATA");
    let nx = ask("ratings.default.svc.cluster.local.", RecordType::A);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    let forwarded = ask("example.com.", RecordType::A);
    assert_eq!(forwarded.metadata.response_code, ResponseCode::ServFail);
}

/// Found by `cargo xtask fuzz dns_packet`: a query with many questions is answered
/// FORMERR with every question echoed, which outgrew the UDP limit even truncated.
#[test]
fn a_query_with_many_questions_gets_an_answer_within_the_udp_limit() {
    let pod = pod();
    let mut m = Message::query();
    m.metadata.id = 0x4242;
    for i in 0..100 {
        let name = format!("a-rather-long-label-number-{i}.default.svc.cluster.local.");
        m.add_query(Query::query(
            Name::from_ascii(&name).expect("name"),
            RecordType::A,
        ));
    }
    let packet = m.to_vec().expect("encodes");
    assert!(packet.len() > 1232, "the query itself is over the limit");
    let answer = runtime()
        .block_on(pod.handle(&packet, Transport::Udp))
        .expect("an answer");
    assert!(answer.len() <= 1232, "{} bytes over UDP", answer.len());
    let answer = Message::from_vec(&answer).expect("parses");
    assert_eq!(answer.metadata.id, 0x4242);
    assert!(
        answer.metadata.truncation,
        "TC set: the client may retry over TCP"
    );
    assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
}

#[test]
fn mutated_and_random_packets_never_panic_and_answers_parse() {
    let pod = pod();
    let rt = runtime();
    let seeds = [
        query("reviews.default.svc.cluster.local.", RecordType::A),
        query("example.com.", RecordType::AAAA),
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..20_000 {
        let mut packet = seeds[round % seeds.len()].clone();
        match next() % 4 {
            // Flip a few bytes.
            0 | 1 => {
                for _ in 0..=(next() % 4) {
                    let i = (next() as usize) % packet.len();
                    packet[i] = next() as u8;
                }
            }
            // Cut it short.
            2 => packet.truncate((next() as usize) % packet.len()),
            // Pure noise.
            _ => packet = (0..(next() % 300)).map(|_| next() as u8).collect(),
        }
        let answer = rt.block_on(pod.handle(&packet, Transport::Udp));
        if let Some(bytes) = answer {
            let m = Message::from_vec(&bytes).expect("our answers parse");
            assert_eq!(bytes[..2], packet[..2], "answer id");
            assert!(bytes.len() <= 1232, "UDP answers stay within the safe size");
            let _ = m;
        }
    }
}
