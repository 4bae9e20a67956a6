//! `telenet-ingress`: the ingress service alone; the same as `telenet serve --service ingress`.
fn main() -> std::process::ExitCode {
    telenet::cli::main_service(telenet::ServiceName::Ingress)
}
