//! `cargo run -p mesh-config --example validate -- FILE|DIR...`: what `mesh-agent validate`
//! will print.
fn main() {
    let paths: Vec<std::path::PathBuf> = std::env::args_os().skip(1).map(Into::into).collect();
    let report = mesh_config::validate_paths(&paths);
    print!("{report}");
    println!(
        "{} objects, {} errors, {} warnings",
        report.objects,
        report.errors.len(),
        report.warnings.len()
    );
    if !report.is_ok() {
        std::process::exit(1);
    }
}
