//! The `plugsync` binary.

fn main() -> std::process::ExitCode {
    plugsync::run()
}
