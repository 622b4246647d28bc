#![forbid(unsafe_code)]

/// mimalloc returns freed memory to the system promptly; with glibc's allocator, large buffers
/// freed on one of many threads stayed resident in its arena (see docs/design.md, "Bounded
/// memory across exchanges").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    starsync::cli::main()
}
