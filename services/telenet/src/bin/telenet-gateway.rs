//! `telenet-gateway`: the gateway service alone; the same as `telenet serve --service gateway`.
fn main() -> std::process::ExitCode {
    telenet::cli::main_service(telenet::ServiceName::Gateway)
}
