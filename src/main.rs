//! The `cairn` binary: a thin shell around `cairn-cli`.

fn main() -> std::process::ExitCode {
    cairn_cli::main()
}
