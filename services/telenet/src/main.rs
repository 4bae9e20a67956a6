//! `telenet`: run the suite (see `telenet --help`).
fn main() -> std::process::ExitCode {
    telenet::cli::main()
}
