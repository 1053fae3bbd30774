//! Arbitrary bytes as a configuration file: the YAML loader (budgets, typed decoding), then
//! the validator and the snapshot build on whatever objects decoded. Nothing may panic,
//! hang or allocate without bound (libFuzzer's -rss_limit_mb and -timeout catch those).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_config::{LoadOptions, resolve::MeshOptions, snapshot::BuildOptions, yaml};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let load = yaml::load_str(
        text,
        Some(std::path::Path::new("fuzz.yaml")),
        &LoadOptions::default(),
    );
    // Every refusal names the file.
    for e in &load.errors {
        assert!(e.to_string().starts_with("fuzz.yaml"), "{e}");
    }
    let _ = mesh_config::validate::validate(&load.objects, &MeshOptions::default());
    let refs: Vec<_> = load.objects.iter().collect();
    let _ = mesh_config::Snapshot::build_from_refs(&refs, &BuildOptions::default());
});
