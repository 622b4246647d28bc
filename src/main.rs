fn main() -> std::process::ExitCode {
    starsync::cli::main()
}
