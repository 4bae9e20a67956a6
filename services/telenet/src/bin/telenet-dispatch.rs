//! `telenet-dispatch`: the dispatch service alone; the same as `telenet serve --service dispatch`.
fn main() -> std::process::ExitCode {
    telenet::cli::main_service(telenet::ServiceName::Dispatch)
}
