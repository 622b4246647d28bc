#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    starsync::cli::main()
}
