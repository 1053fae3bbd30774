use super::plan::*;
use super::*;

#[test]
fn names_fit_interface_and_path_limits() {
    let id = new_run_id();
    assert_eq!(id.len(), 5);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    );
    assert_eq!(lab_netns(&id), format!("mt{id}-lab"));
    for ifname in [lab_port_name(MAX_NODES), node_port_name(MAX_PODS_PER_NODE)] {
        assert!(ifname.len() <= 15, "{ifname} is longer than IFNAMSIZ-1");
    }
}

#[test]
fn run_ids_differ() {
    let ids: std::collections::HashSet<_> = (0..1000).map(|_| new_run_id()).collect();
    assert!(ids.len() > 990, "too many collisions: {}", ids.len());
}

#[test]
fn address_plan() {
    assert_eq!(node_ipv4(1).to_string(), "198.18.0.1");
    assert_eq!(pod_gateway_ipv4(2).to_string(), "198.18.2.1");
    assert_eq!(pod_ipv4(2, 1).to_string(), "198.18.2.11");
    assert_eq!(pod_subnet_ipv4(3), "198.18.3.0/24");
    assert_eq!(node_ipv6(1).to_string(), "fd00::1");
    assert_eq!(pod_gateway_ipv6(2).to_string(), "fd00:0:0:2::1");
    assert_eq!(pod_ipv6(2, 1).to_string(), "fd00:0:0:2::11");
    assert_eq!(pod_ipv6(12, 240).to_string(), "fd00:0:0:12::250");
    assert_eq!(pod_subnet_ipv6(12), "fd00:0:0:12::/64");
    assert_eq!(node_cgroup_name(1), "n1");
    assert_eq!(pod_cgroup_name(2), "p2");
}

#[test]
fn addresses_stay_in_benchmark_range() {
    let bench: std::net::Ipv4Addr = "198.18.0.0".parse().unwrap();
    let in_range = |a: std::net::Ipv4Addr| (u32::from(a) >> 17) == (u32::from(bench) >> 17);
    assert!(in_range(pod_ipv4(MAX_NODES, MAX_PODS_PER_NODE)));
    assert!(in_range(node_ipv4(MAX_NODES)));
    assert_eq!(
        pod_ipv4(MAX_NODES, MAX_PODS_PER_NODE).octets()[1],
        18,
        "198.19/16 is for VIPs"
    );
}

#[test]
fn spec_validation() {
    assert!(
        LabSpec {
            nodes: 0,
            pods_per_node: 1
        }
        .validate()
        .is_err()
    );
    assert!(
        LabSpec {
            nodes: MAX_NODES + 1,
            pods_per_node: 1
        }
        .validate()
        .is_err()
    );
    assert!(
        LabSpec {
            nodes: 1,
            pods_per_node: MAX_PODS_PER_NODE + 1
        }
        .validate()
        .is_err()
    );
    assert!(
        LabSpec {
            nodes: 2,
            pods_per_node: 0
        }
        .validate()
        .is_ok()
    );
}

#[test]
fn ip_failed_line_is_parsed() {
    let stderr =
        "Error: either \"local\" is duplicate, or \"x\" is a garbage.\nCommand failed -:3\n";
    assert_eq!(crate::ip::failed_line(stderr), Some(3));
    assert_eq!(crate::ip::failed_line("Cannot find device \"eth9\""), None);
}

#[test]
fn lab_types_can_be_shared_with_async_code() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Lab>();
    send_sync::<Pod>();
    send_sync::<LabChild>();
    send_sync::<LabError>();
}
