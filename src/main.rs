fn main() -> std::process::ExitCode {
    convgraph::cli::main()
}
