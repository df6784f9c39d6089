//! The `serval` binary: clearml-serving's command line on serval's store.

mod cli;
mod commands;
mod context;
mod deployment;
mod output;
mod parse;

use std::process::ExitCode;

/// mimalloc gives freed memory back to the OS within moments; glibc's malloc kept 1.4 GB of a
/// server's heap after two 1 M-row requests (docs/reliability.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Result;
use clap::{CommandFactory, Parser};

use cli::{
    AuthCommand, Cli, Command, LoggingCommand, MetricsCommand, ModelCommand, MonitorCommand,
    StoreCommand,
};
use commands::{
    auth, endpoints, list, logging, metrics, monitor, predict, registry, rollout, serve, service,
    shadow, store, triton_repo,
};
use context::Context;

fn run(cli: &Cli) -> Result<()> {
    let Some(command) = &cli.command else {
        Cli::command().print_help()?;
        return Ok(());
    };
    // Commands that need no store.
    if let Command::Predict(args) = command {
        return predict::predict(args);
    }
    let ctx = match command {
        // A server waits for a store that is not reachable yet (a database still starting).
        Command::Serve(_) => serve::until_store_answers(|| Context::open(&cli.global))?,
        _ => Context::open(&cli.global)?,
    };
    match command {
        Command::List => service::list(&ctx),
        Command::Create(args) => service::create(&ctx, args),
        Command::Config(args) => service::config(&ctx, args),
        Command::Model(cmd) => match cmd {
            ModelCommand::List => list::list(&ctx),
            ModelCommand::Add(args) => endpoints::add(&ctx, args),
            ModelCommand::Remove(args) => endpoints::remove(&ctx, args),
            ModelCommand::Canary(args) => endpoints::canary(&ctx, args),
            ModelCommand::Shadow(args) => shadow::shadow(&ctx, args),
            ModelCommand::Rollout(args) => rollout::rollout(&ctx, args),
            ModelCommand::AutoUpdate(args) => endpoints::auto_update(&ctx, args),
            ModelCommand::Upload(args) => registry::upload(&ctx, args),
            ModelCommand::Publish(args) => registry::publish(&ctx, args),
            ModelCommand::Tag(args) => registry::tag(&ctx, args),
            ModelCommand::Info(args) => registry::info(&ctx, args),
            ModelCommand::Registry(args) => registry::registry(&ctx, args),
        },
        Command::Metrics(cmd) => match cmd {
            MetricsCommand::Add(args) => metrics::add(&ctx, args),
            MetricsCommand::Remove(args) => metrics::remove(&ctx, args),
            MetricsCommand::List => metrics::list(&ctx),
        },
        Command::Monitor(cmd) => match cmd {
            MonitorCommand::Reference(args) => monitor::reference(&ctx, args),
            MonitorCommand::Drift(args) => monitor::drift(&ctx, args),
            MonitorCommand::Remove(args) => monitor::remove(&ctx, args),
        },
        Command::Logging(cmd) => match cmd {
            LoggingCommand::Add(args) => logging::add(&ctx, args),
            LoggingCommand::Remove(args) => logging::remove(&ctx, args),
            LoggingCommand::List => logging::list(&ctx),
        },
        Command::Auth(cmd) => match cmd {
            AuthCommand::CreateKey(args) => auth::create_key(&ctx, args),
            AuthCommand::List => auth::list(&ctx),
            AuthCommand::Revoke(args) => auth::revoke(&ctx, args),
        },
        Command::Audit(args) => auth::audit(&ctx, args),
        Command::Store(cmd) => match cmd {
            StoreCommand::Export(args) => store::export(&ctx, args),
            StoreCommand::Import(args) => store::import(&ctx, args),
            StoreCommand::Migrate => store::migrate(&ctx),
        },
        Command::Predict(_) => unreachable!("handled before opening the store"),
        Command::Serve(args) => serve::serve(ctx, &cli.global, args),
        Command::TritonRepo(args) => triton_repo::triton_repo(&ctx, &cli.global, args),
    }
}

fn init_logging(debug: bool, serving: bool) {
    let default = match (debug, serving) {
        (true, _) => "debug",
        (false, true) => "info",
        (false, false) => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SERVAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(
        cli.global.debug,
        matches!(cli.command, Some(Command::Serve(_))),
    );
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if cli.global.debug {
                eprintln!("Error: {error:?}");
            } else {
                // One readable line: the outermost context and its root cause.
                let root = error.root_cause().to_string();
                let top = error.to_string();
                if top == root {
                    eprintln!("Error: {top}");
                } else {
                    eprintln!("Error: {top}: {root}");
                }
            }
            ExitCode::FAILURE
        }
    }
}
