//! The `coexist` binary: the command line over the `coexist` library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
