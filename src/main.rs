// Blocks of 4 KiB and more on a cache line: see `malloc_tuning::LineAligned`.
#[global_allocator]
static ALLOCATOR: convgraph::malloc_tuning::LineAligned = convgraph::malloc_tuning::LineAligned;

fn main() -> std::process::ExitCode {
    convgraph::cli::main()
}
