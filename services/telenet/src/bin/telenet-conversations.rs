//! `telenet-conversations`: the conversations service alone; the same as `telenet serve --service conversations`.
fn main() -> std::process::ExitCode {
    telenet::cli::main_service(telenet::ServiceName::Conversations)
}
