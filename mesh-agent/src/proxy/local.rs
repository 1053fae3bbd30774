//! The pods enrolled on this node, by address: the inbound side needs their labels for
//! policy, and the outbound side knows without asking the configuration that a local pod
//! is in the mesh (it is captured here) and which identity it has.
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{Arc, RwLock},
};

use mesh_identity::SpiffeId;

#[derive(Debug)]
pub struct LocalPod {
    /// `namespace/name`.
    pub key: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub identity: SpiffeId,
}

#[derive(Default)]
pub struct LocalPods {
    by_ip: RwLock<HashMap<IpAddr, Arc<LocalPod>>>,
}

impl LocalPods {
    pub fn insert(&self, ips: &[IpAddr], pod: Arc<LocalPod>) {
        let mut map = self.by_ip.write().unwrap_or_else(|p| p.into_inner());
        for ip in ips {
            map.insert(*ip, pod.clone());
        }
    }

    pub fn remove(&self, ips: &[IpAddr]) {
        let mut map = self.by_ip.write().unwrap_or_else(|p| p.into_inner());
        for ip in ips {
            map.remove(ip);
        }
    }

    pub fn get(&self, ip: IpAddr) -> Option<Arc<LocalPod>> {
        self.by_ip
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ip)
            .cloned()
    }
}
