//! Configuration through the agent binary: `validate` on the users' YAML, a watched
//! config directory, `apply` to a running agent, and a broken edit that keeps the last
//! good snapshot while connections keep flowing.
use std::{io::Write, path::Path, process::Command, time::Duration};

use anyhow::Result;
use mesh_tests::{Mesh, agent_bin, eventually, finish_held, wait_for};

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

#[test]
fn validate_accepts_bookinfo_and_seeds_and_names_the_broken_field() -> Result<()> {
    let ok = Command::new(agent_bin())
        .arg("validate")
        .arg(fixtures().join("istio-bookinfo"))
        .arg(fixtures().join("seeds"))
        .env("RUST_BACKTRACE", "0")
        .output()?;
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(stdout.contains("object(s) valid"), "{stdout}");

    for (file, needle) in [
        ("weights-90.yaml", "spec.http[0].route[1].weight"),
        ("tab-indentation.yaml", "tab"),
        ("unknown-field.yaml", "unknown field"),
        ("subset-not-defined.yaml", "subset"),
    ] {
        let out = Command::new(agent_bin())
            .arg("validate")
            .arg(fixtures().join("broken").join(file))
            .env("RUST_BACKTRACE", "0")
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{file} passed validation");
        assert!(
            text.contains(file) && text.contains(needle),
            "{file}: {text}"
        );
    }
    Ok(())
}

/// The agent loads a watched directory; edits are picked up; a broken edit keeps the
/// last good snapshot (visible in config_dump and in status); `apply` adds objects; an
/// established connection through the agent is not disturbed by any of it.
#[test]
fn watched_config_dir_hot_reload_keeps_last_good_and_connections() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("mesh-test-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let guard = RemoveDir(dir.clone());
    let bookinfo = fixtures().join("istio-bookinfo");
    for f in [
        "bookinfo.yaml",
        "destination-rule-all.yaml",
        "virtual-service-reviews-80-20.yaml",
    ] {
        std::fs::copy(bookinfo.join(f), dir.join(f))?;
    }
    let dir_arg = dir.to_string_lossy().into_owned();
    let mesh = Mesh::start_with_args(2, 1, &["--config-dir", &dir_arg])?;
    mesh.enroll(1, 1)?;

    let weights = |mesh: &Mesh| -> Result<Vec<u64>> {
        let dump = mesh.block_on(mesh.client(1).config_dump())?;
        let text = dump.to_string();
        // The 80/20 split: find the reviews route weights wherever the dump keeps them.
        Ok(["\"weight\":80", "\"weight\":20", "\"weight\":50"]
            .iter()
            .map(|w| text.matches(w).count() as u64)
            .collect())
    };
    wait_for("the 80/20 split loaded", || {
        weights(&mesh).map(|w| w[0] >= 1 && w[1] >= 1)
    })?;

    // A long-lived connection through the agent while the configuration changes.
    let _echo = mesh.serve_in_pod(2, 1, &["echo", "--listen", "0.0.0.0:9000"], 9000)?;
    let dst = format!("{}:9000", mesh.pod(2, 1).ip());
    let long = mesh.hold_tcp_client(1, 1, &dst, 10 * 1024 * 1024, Duration::from_secs(8))?;

    // Edit: 80/20 -> 50/50.
    let vs = std::fs::read_to_string(bookinfo.join("virtual-service-reviews-80-20.yaml"))?;
    write(
        &dir.join("virtual-service-reviews-80-20.yaml"),
        &vs.replace("weight: 80", "weight: 50")
            .replace("weight: 20", "weight: 50"),
    )?;
    let status = eventually(&mesh, 1, "the 50/50 edit", |_| {
        weights(&mesh).map(|w| w[2] >= 2).unwrap_or(false)
    })?;
    let generation = status["config"]["generation"].as_u64();

    // Broken edit (weights sum to 90): refused, 50/50 stays, the error is visible.
    write(
        &dir.join("virtual-service-reviews-80-20.yaml"),
        &vs.replace("weight: 80", "weight: 70"),
    )?;
    let status = eventually(&mesh, 1, "the broken edit reported", |s| {
        s["config"]["last_errors"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    })?;
    assert!(
        status["config"]["last_errors"]
            .to_string()
            .contains("weight"),
        "{}",
        status["config"]
    );
    assert_eq!(
        status["config"]["generation"].as_u64(),
        generation,
        "a broken edit was swapped in"
    );
    assert!(
        weights(&mesh)?[2] >= 2,
        "the last good snapshot was not kept"
    );

    // apply: a new object through the API; a broken one is refused with the field named.
    let answer = mesh.block_on(mesh.client(1).apply_config(
        "ratings-test-abort.yaml",
        std::fs::read(bookinfo.join("virtual-service-ratings-test-abort.yaml"))?,
    ))?;
    assert_eq!(answer["applied"], 1, "{answer}");
    let err = mesh
        .block_on(mesh.client(1).apply_config("bad.yaml", b"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: x\nspec:\n  hosts: [x]\n  htp: []\n".to_vec()))
        .expect_err("unknown field accepted");
    assert!(err.to_string().contains("htp"), "{err}");

    // The connection that was flowing through all of this finished intact.
    let outcome = finish_held(long)?;
    assert_eq!(outcome["intact"], true);
    drop(mesh);
    drop(guard);
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    // Write then rename, as editors and kubectl-style tools do, so the watcher never
    // reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::File::create(&tmp)?.write_all(text.as_bytes())?;
    std::fs::rename(tmp, path)?;
    Ok(())
}

struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn web_service(endpoint_ip: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  clusterIP: 198.19.0.20
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8080
  - name: tcp-echo
    port: 9000
    targetPort: 9000
---
apiVersion: v1
kind: Endpoints
metadata:
  name: web
  namespace: default
subsets:
- addresses:
  - ip: {endpoint_ip}
  ports:
  - name: http
    port: 8080
  - name: tcp-echo
    port: 9000
"#
    )
}

/// Which backend answers `curl http://198.19.0.20/` from pod n1p1.
fn curl_web(mesh: &Mesh) -> Result<String> {
    let out = mesh.run_in_pod(
        1,
        1,
        "curl",
        &["-sS", "--max-time", "5", "http://198.19.0.20/"],
    )?;
    anyhow::ensure!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(body["service"].as_str().unwrap_or_default().to_string())
}

/// A Service VIP is routed to the endpoint the configuration names. Editing the Endpoints
/// file swaps routing for new connections while an established one stays on its endpoint
/// and ends intact; a broken edit keeps the old routing.
#[test]
fn editing_endpoints_swaps_routing_for_new_connections_only() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("mesh-test-routing-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let guard = RemoveDir(dir.clone());
    let dir_arg = dir.to_string_lossy().into_owned();
    let mesh = Mesh::start_with_args(2, 2, &["--config-dir", &dir_arg])?;
    mesh.enroll(1, 1)?;
    let (one, two) = (
        mesh.pod(2, 1).ip().to_string(),
        mesh.pod(2, 2).ip().to_string(),
    );
    let _http1 = mesh.serve_in_pod(
        2,
        1,
        &["http", "--listen", "0.0.0.0:8080", "--name", "one"],
        8080,
    )?;
    let _http2 = mesh.serve_in_pod(
        2,
        2,
        &["http", "--listen", "0.0.0.0:8080", "--name", "two"],
        8080,
    )?;
    let _echo1 = mesh.serve_in_pod(2, 1, &["echo", "--listen", "0.0.0.0:9000"], 9000)?;
    let _echo2 = mesh.serve_in_pod(2, 2, &["echo", "--listen", "0.0.0.0:9000"], 9000)?;

    write(&dir.join("web.yaml"), &web_service(&one))?;
    // Loaded when the dump shows the Service with this endpoint (the store's generation
    // alone does not tell: an empty directory is a generation too).
    let loaded = |mesh: &Mesh, ip: &str| -> bool {
        mesh.block_on(mesh.client(1).config_dump())
            .map(|d| {
                d["services"]["web.default.svc.cluster.local"]["endpoints"]
                    .to_string()
                    .contains(ip)
            })
            .unwrap_or(false)
    };
    wait_for("web.yaml loaded", || Ok(loaded(&mesh, &one)))?;
    assert_eq!(curl_web(&mesh)?, "one");

    // A connection established to the VIP now (lands on "one"), held open across the edit.
    let held = mesh.hold_tcp_client(1, 1, "198.19.0.20:9000", 1_048_576, Duration::from_secs(6))?;
    std::thread::sleep(Duration::from_millis(500));

    write(&dir.join("web.yaml"), &web_service(&two))?;
    wait_for("routing swapped to the new endpoint", || {
        Ok(curl_web(&mesh)? == "two")
    })?;

    // Broken edit: refused, routing stays on "two".
    write(
        &dir.join("web.yaml"),
        &web_service(&one).replace("subsets:", "subsetz:"),
    )?;
    let status = eventually(&mesh, 1, "the broken edit reported", |s| {
        s["config"]["last_errors"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    })?;
    assert!(
        status["config"]["last_errors"]
            .to_string()
            .contains("subsetz"),
        "{}",
        status["config"]
    );
    for _ in 0..3 {
        assert_eq!(curl_web(&mesh)?, "two", "a broken edit changed routing");
    }
    // ... and counted as a metric, next to the per-Service TCP metrics.
    let metrics = mesh.block_on(mesh.client(1).metrics())?;
    assert!(
        metrics.contains("mesh_config_invalid_inputs 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mesh_config_errors_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_tcp_connections_opened_total{")
                && l.contains("reporter=\"source\"")
                && l.contains("destination_service=\"web.default.svc.cluster.local\"")),
        "{metrics}"
    );

    // The held connection stayed on "one" and ended intact.
    let outcome = finish_held(held)?;
    assert_eq!(outcome["intact"], true);
    let echo_one = format!("{one}:9000");
    eventually(&mesh, 1, "the held connection's record", |s| {
        mesh_tests::recent(s).iter().any(|r| {
            r["upstream"] == echo_one.as_str()
                && r["service"] == "web.default.svc.cluster.local"
                && r["bytes_received"].as_u64() == Some(1_048_576)
        })
    })?;
    drop(mesh);
    drop(guard);
    Ok(())
}

/// A "billion laughs" alias bomb (593 bytes, ~4e8 nodes expanded) posted to the API and
/// dropped into the watched directory: both refused with an error naming the file and the
/// `aliased_nodes` limit, counted per limit, the previous configuration keeps serving, and the
/// agent's peak memory stays small.
#[test]
fn alias_bomb_is_refused_over_the_api_and_from_the_config_dir_with_bounded_memory() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("mesh-test-bomb-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let guard = RemoveDir(dir.clone());
    std::fs::copy(
        fixtures().join("istio-bookinfo/bookinfo.yaml"),
        dir.join("bookinfo.yaml"),
    )?;
    let dir_arg = dir.to_string_lossy().into_owned();
    let mesh = Mesh::start_with_args(1, 1, &["--config-dir", &dir_arg])?;
    let pid = mesh.agent_pid(1).expect("agent running");
    let dump_before = mesh.block_on(mesh.client(1).config_dump())?;
    assert!(
        dump_before
            .to_string()
            .contains("reviews.default.svc.cluster.local"),
        "bookinfo not loaded: {dump_before}"
    );
    let generation = mesh.status(1)?["config"]["generation"].clone();
    let peak_before = peak_rss_kib(pid)?;

    let bomb = std::fs::read(fixtures().join("hostile/billion-laughs.yaml"))?;
    let err = mesh
        .block_on(mesh.client(1).apply_config("bomb.yaml", bomb.clone()))
        .expect_err("the bomb was accepted");
    let text = err.to_string();
    assert!(text.contains("answered 400"), "{text}");
    assert!(
        text.contains("bomb.yaml") && text.contains("aliased_nodes limit of 100000"),
        "{text}"
    );

    // Dropped into the watched directory: the file's unit is refused, the rest stays.
    write(&dir.join("bomb.yaml"), &String::from_utf8(bomb)?)?;
    let status = eventually(&mesh, 1, "the bomb file to be refused", |s| {
        s["config"]["last_errors"]
            .to_string()
            .contains("aliased_nodes")
    })?;
    assert!(
        status["config"]["last_errors"]
            .to_string()
            .contains("bomb.yaml"),
        "{}",
        status["config"]
    );
    assert_eq!(status["config"]["generation"], generation);
    assert_eq!(status["config"]["limits_exceeded"]["aliased_nodes"], 2);

    // Still serving the configuration it had, and answering.
    assert_eq!(mesh.block_on(mesh.client(1).config_dump())?, dump_before);
    let metrics = mesh.metrics(1)?;
    assert!(
        metrics.contains("mesh_config_limits_exceeded_total{limit=\"aliased_nodes\"} 2"),
        "{metrics}"
    );
    // Expanded, the bomb is tens of GB; refused, it costs the agent a few tens of MB.
    let peak_after = peak_rss_kib(pid)?;
    assert!(
        peak_after < peak_before + 64 * 1024,
        "agent peak RSS grew from {peak_before} KiB to {peak_after} KiB"
    );
    eprintln!("agent peak RSS: {peak_before} KiB before, {peak_after} KiB after two bombs");
    drop(mesh);
    drop(guard);
    Ok(())
}

/// A process's peak resident memory (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM for pid {pid}"))
}
