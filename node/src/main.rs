//! The `starling` binary: parse the command line, then run a server command or a client
//! command. Everything else lives in the library.
//!
//! Exit codes: 0 success, 1 failure at run time, 2 a command line or configuration the
//! binary refuses before starting (clap's usage errors, `serve`'s invalid config).

use std::process::ExitCode;

use starling_node::cli::{self, Command, ServeArgs, TopCommand};
use starling_node::config::serve::ServeConfig;

/// mimalloc rather than the C library's allocator: glibc's malloc and free took ~13% of a
/// node's CPU under concurrent control writes (BENCHMARKS.md), and musl's, in the static
/// image, is slow under many threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code of an invalid configuration (as clap's for an invalid command line).
const EXIT_INVALID_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = cli::parse();
    if let TopCommand::Node(Command::Serve(args)) = &cli.command {
        return serve(args);
    }
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result: anyhow::Result<()> = runtime.block_on(async {
        match cli.command {
            TopCommand::Node(Command::Dev(args)) => {
                let _telemetry = starling_node::telemetry::init("starling");
                starling_node::node::run_dev(args).await?;
                Ok(())
            }
            TopCommand::Simulate(args) => {
                let _telemetry = starling_node::telemetry::init("starling-simulate");
                starling_node::simulate::run(args).await
            }
            TopCommand::Certs(args) => cli::certs::run(args),
            TopCommand::Node(other) => cli::run_client(other).await,
        }
    });
    exit(result)
}

/// `starling serve`: loads and validates the configuration before anything starts, then
/// runs the node (or, with `--check`, prints the effective configuration).
fn serve(args: &ServeArgs) -> ExitCode {
    let config = match ServeConfig::load(&args.config).and_then(|c| c.validate().map(|()| c)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: invalid configuration: {e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    if args.check {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    if let Some(filter) = &config.log.filter
        && std::env::var_os("RUST_LOG").is_none()
    {
        // SAFETY: no other thread exists yet (the runtime is built below, nothing before this
        // spawns), so nothing can read the environment while it changes. `telemetry::init`
        // reads RUST_LOG; `log.filter` reaches it this way.
        unsafe { std::env::set_var("RUST_LOG", filter) };
    }
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    exit(runtime.block_on(async {
        let _telemetry = starling_node::telemetry::init("starling");
        starling_node::node::run_serve(config).await?;
        Ok(())
    }))
}

/// The multi-threaded tokio runtime, or `None` after printing why it cannot start.
fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .inspect_err(|e| eprintln!("error: cannot start the async runtime: {e}"))
        .ok()
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
