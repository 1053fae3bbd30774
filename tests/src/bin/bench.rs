fn main() {
    eprintln!("mesh-bench: not yet");
}
