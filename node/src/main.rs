//! The `starling` binary: parse the command line, then run a server command or a client
//! command. Everything else lives in the library.

use std::process::ExitCode;

use starling_node::cli::{self, Command, TopCommand};

fn main() -> ExitCode {
    let cli = cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
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
            TopCommand::Node(other) => cli::run_client(other).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
