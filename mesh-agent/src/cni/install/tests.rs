use std::{path::PathBuf, time::Duration};

use serde_json::{Map, Value, json};

use super::*;

fn mesh_entry() -> Value {
    json!({"type": PLUGIN_TYPE, "agentSocket": "/run/mesh-agent/node/agent.sock"})
}

fn flannel_list() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "cbr0",
        "plugins": [
            {"type": "flannel", "delegate": {"hairpinMode": true}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    })
}

#[test]
fn the_mesh_goes_last_in_the_chain_once() {
    let once = insert(&flannel_list(), &mesh_entry()).expect("insert");
    let types: Vec<&str> = once["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["type"].as_str())
        .collect();
    assert_eq!(types, ["flannel", "portmap", PLUGIN_TYPE]);
    assert_eq!(once["name"], "cbr0");

    // Installing again (an agent upgrade with a new socket) replaces the entry.
    let newer = json!({"type": PLUGIN_TYPE, "agentSocket": "/run/other.sock"});
    let twice = insert(&once, &newer).expect("insert again");
    let plugins = twice["plugins"].as_array().expect("plugins");
    assert_eq!(plugins.len(), 3);
    assert_eq!(plugins[2], newer);
}

#[test]
fn a_single_plugin_conf_becomes_a_list() {
    let conf = json!({
        "cniVersion": "0.4.0",
        "name": "bridge-net",
        "type": "bridge",
        "ipam": {"type": "host-local", "subnet": "198.18.252.0/24"},
    });
    let list = insert(&conf, &mesh_entry()).expect("insert");
    assert_eq!(list["cniVersion"], "0.4.0");
    assert_eq!(list["name"], "bridge-net");
    assert_eq!(
        list["plugins"][0],
        json!({"type": "bridge", "ipam": {"type": "host-local", "subnet": "198.18.252.0/24"}})
    );
    assert_eq!(list["plugins"][1], mesh_entry());
}

#[test]
fn what_is_not_a_network_configuration_is_refused() {
    for (conf, why) in [
        (json!([1, 2]), "not a JSON object"),
        (json!({"name": "x"}), "neither"),
        (json!({"plugins": {"type": "bridge"}}), "not a list"),
        (json!({"plugins": [mesh_entry()]}), "no network plugin"),
    ] {
        let err = insert(&conf, &mesh_entry()).expect_err("refused");
        assert!(err.contains(why), "{conf}: {err}");
    }
}

#[test]
fn remove_takes_only_the_mesh_out() {
    let with = insert(&flannel_list(), &mesh_entry()).expect("insert");
    assert_eq!(remove(&with), Some(flannel_list()));
    assert_eq!(remove(&flannel_list()), None, "nothing to remove");
}

#[test]
fn the_primary_configuration_is_the_first_by_name() {
    let files = vec![
        PathBuf::from("/etc/cni/net.d/99-loopback.conf"),
        PathBuf::from("/etc/cni/net.d/10-flannel.conflist"),
        PathBuf::from("/etc/cni/net.d/87-podman.conflist"),
    ];
    assert_eq!(
        primary_config(files),
        Some(PathBuf::from("/etc/cni/net.d/10-flannel.conflist"))
    );
    assert_eq!(primary_config(Vec::new()), None);
}

/// The whole round on real directories: install into the first file, install again,
/// uninstall, uninstall again.
#[test]
fn install_and_uninstall_on_a_node_directory() -> Result<(), InstallError> {
    let root = std::env::temp_dir().join(format!("mesh-cni-install-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let (bin_dir, conf_dir) = (root.join("bin"), root.join("net.d"));
    fs::create_dir_all(&conf_dir).map_err(io_error(&conf_dir))?;
    let plugin = root.join("mesh-cni-source");
    fs::write(&plugin, b"#!/bin/sh\n").map_err(io_error(&plugin))?;
    let single = conf_dir.join("10-bridge.conf");
    let single_text = json!({"cniVersion": "1.0.0", "name": "net", "type": "bridge"});
    fs::write(&single, single_text.to_string()).map_err(io_error(&single))?;
    let other = conf_dir.join("20-other.conflist");
    fs::write(&other, flannel_list().to_string()).map_err(io_error(&other))?;

    let mut plugin_config = Map::new();
    plugin_config.insert(
        "agentSocket".into(),
        json!("/run/mesh-agent/node/agent.sock"),
    );
    let installer = Installer {
        plugin,
        bin_dir: bin_dir.clone(),
        conf_dir: conf_dir.clone(),
        plugin_config,
    };
    let installed = installer.install(Duration::ZERO)?;
    assert_eq!(installed.config, conf_dir.join("10-bridge.conflist"));
    assert_eq!(installed.replaced, Some(single.clone()));
    assert!(!single.exists(), "the .conf is replaced by the .conflist");
    let mode = fs::metadata(&installed.binary)
        .map_err(io_error(&installed.binary))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let list = read_json(&installed.config)?;
    assert_eq!(list["plugins"][1]["type"], PLUGIN_TYPE);
    assert_eq!(
        read_json(&other)?,
        flannel_list(),
        "only the primary file changes"
    );

    let again = installer.install(Duration::ZERO)?;
    assert_eq!(again.replaced, None);
    assert_eq!(
        read_json(&again.config)?,
        list,
        "installing twice changes nothing"
    );

    assert_eq!(installer.uninstall()?, vec![installed.config.clone()]);
    assert_eq!(
        read_json(&installed.config)?["plugins"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert!(!installed.binary.exists());
    assert_eq!(installer.uninstall()?, Vec::<PathBuf>::new());

    // No network configuration: the installer says what it waited for.
    fs::remove_dir_all(&conf_dir).map_err(io_error(&conf_dir))?;
    let err = installer.install(Duration::ZERO).expect_err("no network");
    assert!(
        err.to_string().contains("is the pod network installed"),
        "{err}"
    );
    let _ = fs::remove_dir_all(&root);
    Ok(())
}
