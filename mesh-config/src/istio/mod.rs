//! Istio resources as serde types covering every field of Istio's API reference for each kind,
//! old and new spellings (`percent` and `percentage.value`, `mirrorPercent` and
//! `mirrorPercentage`, `consecutiveErrors` and `consecutive5xxErrors`). Unknown fields are
//! errors (`deny_unknown_fields`), enums accept only Istio's values.

mod authorization_policy;
mod common;
mod destination_rule;
mod gateway;
pub mod gateway_api;
pub mod mesh_config;
mod peer_authentication;
mod service_entry;
mod virtual_service;

pub use authorization_policy::*;
pub use common::*;
pub use destination_rule::*;
pub use gateway::*;
pub use peer_authentication::*;
pub use service_entry::*;
pub use virtual_service::*;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// A custom resource: the Kubernetes envelope around an Istio `spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resource<S> {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

pub type VirtualService = Resource<VirtualServiceSpec>;
pub type DestinationRule = Resource<DestinationRuleSpec>;
pub type Gateway = Resource<GatewaySpec>;
pub type ServiceEntry = Resource<ServiceEntrySpec>;
pub type WorkloadEntry = Resource<WorkloadEntrySpec>;
pub type PeerAuthentication = Resource<PeerAuthenticationSpec>;
pub type AuthorizationPolicy = Resource<AuthorizationPolicySpec>;
/// `gateway.networking.k8s.io` Gateway (class `istio-waypoint` declares a waypoint).
pub type K8sGateway = Resource<gateway_api::GatewaySpec>;
