//! `mesh-cni`: the mesh's CNI plugin, a binary of its own so the runtime finds it by name
//! in its plugin directory (`CNI_PATH`) and an installer copies a small file, not the
//! agent. Everything it does is in `mesh_agent::cni::plugin`.
use std::io::{Read as _, Write as _};

fn main() -> std::process::ExitCode {
    let mut stdin = Vec::new();
    // A runtime always sends the configuration; VERSION may send none.
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let outcome = mesh_agent::cni::plugin::run(|name| std::env::var(name).ok(), &stdin);
    if let Some(json) = outcome.stdout {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{json}");
        let _ = out.flush();
    }
    if outcome.success {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
