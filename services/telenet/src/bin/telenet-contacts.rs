//! `telenet-contacts`: the contacts service alone; the same as `telenet serve --service contacts`.
fn main() -> std::process::ExitCode {
    telenet::cli::main_service(telenet::ServiceName::Contacts)
}
