//! `mesh-agent demo --prometheus`: Debian's real Prometheus server scraping what the demo
//! started, as Istio's Prometheus addon scrapes a cluster. It runs in node 1's network
//! namespace (every agent's `/metrics` on its node's lab address, the gateway's and the
//! waypoints' in their pods are reachable from there), keeps its data in a temporary
//! directory removed with the demo, and its web UI and HTTP API are carried to the host's
//! loopback (`--prometheus ADDR`) as the gateway is.
use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Stdio,
};

use anyhow::{Context, Result};
use mesh_testbed::lab::{Lab, LabChild};
use tokio::net::TcpListener;

use super::ingress;

/// Where every agent, gateway and waypoint of the demo serves `/metrics` (Istio's port).
pub const METRICS_PORT: u16 = 15020;
const PROMETHEUS_PORT: u16 = 9090;
const LOG_FILE: &str = "prometheus.log";
/// Short, so a user (and the test) sees a request in Prometheus within seconds.
const SCRAPE_INTERVAL: &str = "2s";

/// What the demo scrapes: each agent by its node's address, each proxy by its pod's.
pub struct Targets {
    pub agents: Vec<Ipv4Addr>,
    /// (job, pod address): `gateway` or `waypoint`.
    pub proxies: Vec<(&'static str, Ipv4Addr)>,
}

/// The Prometheus configuration for `targets`.
pub fn config_yaml(targets: &Targets) -> String {
    let list = |addrs: &mut dyn Iterator<Item = &Ipv4Addr>| {
        addrs
            .map(|a| format!("'{a}:{METRICS_PORT}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut yaml = format!(
        "global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  evaluation_interval: {SCRAPE_INTERVAL}\n\
         scrape_configs:\n- job_name: mesh-agent\n  static_configs:\n  - targets: [{}]\n",
        list(&mut targets.agents.iter())
    );
    for job in ["gateway", "waypoint"] {
        let mut addrs = targets
            .proxies
            .iter()
            .filter(|(j, _)| *j == job)
            .map(|(_, a)| a)
            .peekable();
        if addrs.peek().is_some() {
            yaml.push_str(&format!(
                "- job_name: {job}\n  static_configs:\n  - targets: [{}]\n",
                list(&mut addrs)
            ));
        }
    }
    yaml
}

/// The running server; its data directory is removed on drop (the process dies with the
/// lab).
pub struct Prometheus {
    /// Where the host reaches it.
    pub url: SocketAddr,
    dir: PathBuf,
    forward: tokio::task::JoinHandle<()>,
    _child: LabChild,
}

impl Prometheus {
    /// Where its log is, for the user when something is off.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.forward.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes the configuration and starts `prometheus` in node 1's namespace, reachable on
/// `listen` on the host.
pub async fn start(lab: &Lab, targets: &Targets, listen: SocketAddr) -> Result<Prometheus> {
    let dir = std::env::temp_dir().join(format!("mesh-demo-prometheus-{}", lab.id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, config_yaml(targets))
        .with_context(|| format!("writing {}", config.display()))?;
    let node = lab.node(1);
    let inside = SocketAddr::from((node.addr(), PROMETHEUS_PORT));
    let log = std::fs::File::create(dir.join(LOG_FILE))?;
    let mut command = node.daemon_command("prometheus");
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={inside}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let child = lab
        .spawn(&mut command)
        .context("starting prometheus (cargo xtask setup installs Debian's package)")?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (--prometheus)"))?;
    let url = listener.local_addr()?;
    let forward = ingress::spawn(listener, node.netns_path(), inside)?;
    Ok(Prometheus {
        url,
        dir,
        forward,
        _child: child,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_agent_and_proxy_is_a_scrape_target_of_its_job() {
        let targets = Targets {
            agents: vec![Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2)],
            proxies: vec![("gateway", Ipv4Addr::new(198, 18, 1, 11))],
        };
        let yaml = config_yaml(&targets);
        assert!(
            yaml.contains("- job_name: mesh-agent\n  static_configs:\n  - targets: ['198.18.0.1:15020', '198.18.0.2:15020']\n"),
            "{yaml}"
        );
        assert!(
            yaml.contains(
                "- job_name: gateway\n  static_configs:\n  - targets: ['198.18.1.11:15020']\n"
            ),
            "{yaml}"
        );
        assert!(!yaml.contains("waypoint"), "{yaml}");
    }
}
