fn main() -> std::process::ExitCode {
    starsync::node::cli::main()
}
