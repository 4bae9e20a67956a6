//! `telenet-media`: the media service alone; the same as `telenet serve --service media`.
fn main() -> std::process::ExitCode {
    telenet::cli::main_service(telenet::ServiceName::Media)
}
