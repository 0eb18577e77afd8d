//! The `bucky-pickle-relay` binary: everything is in [`bucky_pickle_relay::cli::main`].

fn main() -> std::process::ExitCode {
    bucky_pickle_relay::cli::main()
}
