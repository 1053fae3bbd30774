//! Sources that feed the [`crate::ConfigStore`]: a watched directory of YAML files.
//! (The Kubernetes API source through kube-rs watchers is not written yet.)

pub mod dir;
