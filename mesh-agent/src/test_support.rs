//! What the unit tests of several modules share.
use mesh_config::Snapshot;

/// The snapshot the agent would hold after loading `yaml`.
pub fn snapshot(yaml: &str) -> Snapshot {
    let loaded = mesh_config::load_str(yaml, None).expect("test YAML loads");
    Snapshot::build(&loaded).expect("test YAML builds")
}
