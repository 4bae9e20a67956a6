//! `telenet-reporting`: the reporting service alone; the same as `telenet serve --service reporting`.
fn main() -> std::process::ExitCode {
    telenet::cli::main_service(telenet::ServiceName::Reporting)
}
