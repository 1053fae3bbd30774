//! The pods enrolled on this node, by address, with their identities: the outbound side
//! knows without asking the configuration that a local pod is in the mesh (it is captured
//! here) and which identity it must present.
use std::{collections::HashMap, net::IpAddr, sync::RwLock};

use mesh_identity::SpiffeId;

#[derive(Default)]
pub struct LocalPods {
    by_ip: RwLock<HashMap<IpAddr, SpiffeId>>,
}

impl LocalPods {
    pub fn insert(&self, ips: &[IpAddr], identity: &SpiffeId) {
        let mut map = self.by_ip.write().unwrap_or_else(|p| p.into_inner());
        for ip in ips {
            map.insert(*ip, identity.clone());
        }
    }

    pub fn remove(&self, ips: &[IpAddr]) {
        let mut map = self.by_ip.write().unwrap_or_else(|p| p.into_inner());
        for ip in ips {
            map.remove(ip);
        }
    }

    /// Whether `ip` is a pod enrolled on this node.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.by_ip
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&ip)
    }

    /// The identity of the local pod with address `ip`.
    pub fn identity(&self, ip: IpAddr) -> Option<SpiffeId> {
        self.by_ip
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ip)
            .cloned()
    }
}
