//! Arbitrary bytes as what reaches a pod's DNS proxy on 15053. The first byte picks the
//! path; the rest is the packet:
//! * even: a query over UDP, odd: over TCP (`PodDns::handle`, the same call the listeners
//!   make). Names of the snapshot below are answered by the mesh, everything else is
//!   forwarded to no upstream (SERVFAIL at once, no network). Nothing may panic; every
//!   answer parses, carries the query's id and, over UDP, fits the safe size.
//! * also, the same bytes as an upstream resolver's answer: decoded, stored in the cache
//!   and read back, as the forwarder does with what its upstream sends.
#![no_main]

use std::{
    collections::BTreeMap,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use mesh_agent::dns::{NodeDns, PodDns, Transport, cache::Cache, upstream::Forwarder};
use mesh_config::{
    ConfigStore,
    store::{UnitChange, UnitUpdate},
};

/// A Service, a headless Service with endpoints and a ServiceEntry: every kind of answer
/// the mesh gives itself.
const CONFIG: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {clusterIP: 198.19.0.10, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec: {clusterIP: None, selector: {app: db}, ports: [{name: tcp, port: 5432}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: default, labels: {app: db}}
spec: {containers: [{name: db, image: db}]}
status: {podIP: 198.18.1.20}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: https, protocol: TLS}]
"#;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    pod: PodDns,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let store = Arc::new(ConfigStore::default());
        let loaded = mesh_config::load_str(CONFIG, None).expect("the fixture loads");
        store
            .apply(
                "fuzz",
                vec![UnitUpdate {
                    unit: "fuzz.yaml".into(),
                    change: UnitChange::Set(loaded.objects),
                }],
            )
            .expect("the fixture applies");
        let node = Arc::new(NodeDns {
            config: store,
            cluster_domain: "cluster.local".into(),
            forwarder: Forwarder::new(Vec::new(), 64),
            metrics: Default::default(),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        Fixture {
            runtime,
            pod: PodDns::new("default/p".into(), "default".into(), &BTreeMap::new(), node),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, packet)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let transport = if selector % 2 == 0 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    if let Some(answer) = f.runtime.block_on(f.pod.handle(packet, transport)) {
        Message::from_vec(&answer).expect("every answer the proxy sends parses");
        assert_eq!(answer[..2], packet[..2], "the answer carries the query's id");
        if transport == Transport::Udp {
            assert!(answer.len() <= 1232, "UDP answers stay within the safe size");
        }
    }

    // The same bytes as an upstream's answer: what the cache keeps must come back intact
    // and expire when its TTL says.
    if let Ok(upstream) = Message::from_vec(packet) {
        let mut cache = Cache::new(4);
        let key = ("fuzz.example".to_string(), 1, 1);
        let now = Instant::now();
        cache.insert(key.clone(), &upstream, now);
        if let Some(hit) = cache.get(&key, now) {
            assert_eq!(hit.answers.len(), upstream.answers.len());
        }
        assert!(
            cache.get(&key, now + Duration::from_secs(2 * 3600)).is_none(),
            "nothing outlives the cache's longest TTL"
        );
        assert!(cache.len() <= 4);
    }
});
