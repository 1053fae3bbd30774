//! Sources that feed the [`crate::ConfigStore`]: a watched directory of YAML files
//! ([`dir`]) and the Kubernetes API through kube-rs watchers ([`kube`]). Both decode by the
//! same typed path and report bad input through the store, which keeps the last good snapshot.

pub mod dir;
pub mod kube;
