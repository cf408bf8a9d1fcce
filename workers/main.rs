use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use docpipe::amqp::short;
use docpipe::cli::{self, Cli, Command};
use docpipe::config::{Config, LogFormat};
use docpipe::stages::StageCatalog;

fn main() -> std::process::ExitCode {
    // Before the runtime's threads start (see docpipe_models::threads).
    docpipe_models::threads::settle();
    limit_openmp_threads();
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime").block_on(start())
}

/// Tesseract's OpenMP threads fight each other on small machines (measured: about 10x slower
/// per page on 2 cores). libgomp reads OMP_THREAD_LIMIT when it loads, before main, so when the
/// variable is missing the process re-executes itself with it set.
fn limit_openmp_threads() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("OMP_THREAD_LIMIT").is_some() {
        return;
    }
    if let Ok(exe) = std::env::current_exe() {
        let error = std::process::Command::new(exe).args(std::env::args_os().skip(1)).env("OMP_THREAD_LIMIT", "1").exec();
        eprintln!("docpipe: could not re-execute with OMP_THREAD_LIMIT=1 ({error}); continuing");
    }
}

async fn start() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("docpipe: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let mut config = Config::load(cli.config.as_deref())?;
    if cli.json_logs {
        config.log.format = LogFormat::Json;
    }
    docpipe::logging::init(&config.log);
    let ok = std::process::ExitCode::SUCCESS;
    match cli.command {
        Command::Process(args) => {
            let catalog = StageCatalog::builtin(&config);
            cli::process::run(Arc::new(config), catalog, args).await
        },
        Command::Submit(args) => cli::submit::run(&config, args).await,
        Command::Results(args) => cli::results::run(&config, args).await,
        Command::Status(args) => cli::status::run(&config, args).await,
        Command::Worker(args) => {
            if let Some(threads) = args.threads {
                config.worker.threads = threads.max(1);
            }
            if let Some(concurrency) = args.concurrency {
                config.worker.concurrency = concurrency.max(1);
            }
            let stages = cli::select_stages(&config, &args.stages)?;
            let catalog = StageCatalog::builtin(&config);
            docpipe::amqp::worker::run(Arc::new(config), catalog, stages, cli::shutdown_signal()).await?;
            Ok(ok)
        }
        Command::Declare => {
            let connection = docpipe::amqp::connect(&config).await.context("connecting to the broker")?;
            let channel = connection.create_channel().await?;
            docpipe::amqp::topology::declare(&channel, &config).await?;
            connection.close(200, short("declared")).await?;
            println!("declared exchanges and queues with prefix `{}`", config.broker.prefix);
            Ok(ok)
        }
        Command::Dlq(args) => cli::dlq::run(&config, args).await,
        Command::Models(args) => cli::models::run(&config, args),
        Command::Resubmit(args) => cli::resubmit::run(config, args).await,
        Command::Store(args) => cli::store::run(&config, args).await,
        Command::Serve(args) => cli::serve::run(&config, args).await,
        Command::Users(args) => cli::serve::users(&config, args).await,
        Command::Keys(args) => cli::keys::run(args),
        Command::Ocr(args) => cli::ocr::run(args),
        Command::Verify(args) => cli::verify::run(args),
        Command::Schema(args) => {
            std::fs::create_dir_all(&args.out)?;
            for (name, text) in docpipe::schema::json_schemas() {
                std::fs::write(args.out.join(name), text)?;
            }
            println!("wrote {}", args.out.display());
            Ok(ok)
        }
    }
}
