//! The waypoints a configuration asks for: Gateway API `Gateway`s with
//! `gatewayClassName: istio-waypoint` (what `istioctl waypoint apply` creates). The demo
//! will start one `mesh-agent waypoint` per entry, in an enrolled pod of its own, once
//! that command exists; until then it says which it did not start.
use mesh_config::{LoadedObject, Object};

pub const WAYPOINT_CLASS: &str = "istio-waypoint";

/// `namespace/name` of every waypoint Gateway in the configuration.
pub fn requested(objects: &[LoadedObject]) -> Vec<String> {
    objects
        .iter()
        .filter_map(|o| match &o.object {
            Object::K8sGateway(g) if g.spec.gateway_class_name == WAYPOINT_CLASS => Some(format!(
                "{}/{}",
                g.metadata.namespace.as_deref().unwrap_or("default"),
                g.metadata.name.as_deref().unwrap_or_default()
            )),
            _ => None,
        })
        .collect()
}
