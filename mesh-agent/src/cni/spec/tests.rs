use super::*;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn the_kubelets_environment_is_read() {
    let inv = Invocation::from_env(env(&[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=c1",
        ),
    ]))
    .unwrap();
    assert_eq!(inv.command, Command::Add);
    assert_eq!(inv.netns, Some(PathBuf::from("/var/run/netns/x")));
    assert_eq!(inv.pod(), Some(("shop", "web-1")));
}

#[test]
fn missing_variables_are_named_and_del_needs_less() {
    let err =
        Invocation::from_env(env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c")])).unwrap_err();
    assert_eq!(err.code, code::INVALID_ENVIRONMENT);
    assert!(err.msg.contains("CNI_NETNS"), "{err}");
    // DEL: the namespace may already be gone.
    let del = Invocation::from_env(env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c")]));
    assert_eq!(del.unwrap().pod(), None);
    let version = Invocation::from_env(env(&[("CNI_COMMAND", "VERSION")]));
    assert_eq!(version.unwrap().command, Command::Version);
    let err = Invocation::from_env(env(&[("CNI_COMMAND", "UPGRADE")])).unwrap_err();
    assert_eq!(err.code, code::INVALID_ENVIRONMENT);
}

#[test]
fn config_with_prev_result_gives_the_addresses() {
    let conf = NetConf::parse(
        br#"{"cniVersion":"1.0.0","name":"k8s","type":"mesh-cni","agentSocket":"/run/m/a.sock",
            "runtimeConfig":{"x":1},
            "prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],
              "ips":[{"address":"198.18.7.2/24","gateway":"198.18.7.1","interface":0},
                     {"address":"fd00::7:2/64","interface":0}]}}"#,
    )
    .unwrap();
    assert_eq!(
        conf.modes_file(),
        PathBuf::from("/run/m/dataplane-modes.json")
    );
    let ips = result_ips(conf.require_prev_result().unwrap()).unwrap();
    assert_eq!(
        ips,
        vec![
            "198.18.7.2".parse::<IpAddr>().unwrap(),
            "fd00::7:2".parse().unwrap()
        ]
    );
}

#[test]
fn bad_configs_get_the_specs_codes() {
    let err = NetConf::parse(br#"{"cniVersion":"0.2.0"}"#).unwrap_err();
    assert_eq!(err.code, code::INCOMPATIBLE_VERSION);
    let err = NetConf::parse(b"{").unwrap_err();
    assert_eq!(err.code, code::DECODING_FAILURE);
    let conf = NetConf::parse(br#"{"cniVersion":"1.0.0"}"#).unwrap();
    assert_eq!(
        conf.require_prev_result().unwrap_err().code,
        code::INVALID_NETWORK_CONFIG
    );
    let bad = serde_json::json!({"ips": [{"address": "nope/24"}]});
    assert_eq!(
        result_ips(&bad).unwrap_err().code,
        code::INVALID_NETWORK_CONFIG
    );
    let json = CniError::new(7, "m", "d").to_json("1.0.0");
    assert_eq!(json["code"], 7);
    assert_eq!(json["msg"], "m");
    assert_eq!(json["details"], "d");
}

#[test]
fn cni_args_tolerate_noise() {
    let args = parse_args("A=1; B = 2 ;junk;=x;C=");
    assert_eq!(args.get("A").map(String::as_str), Some("1"));
    assert_eq!(args.get("B").map(String::as_str), Some("2"));
    assert_eq!(args.get("C").map(String::as_str), Some(""));
    assert_eq!(args.len(), 3);
}
