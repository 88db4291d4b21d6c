//! The `moat` binary: `serve` today (`check` and `lint` arrive with the pipeline and rules).
//! anyhow lives only here. Exit codes: 0 ok, 1 runtime failure, 2 bad config or usage.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use moat::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// moat: an anti-spam filtering SMTP proxy in front of your MTA.
#[derive(Parser, Debug)]
#[command(name = "moat", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Listen for SMTP and relay filtered mail to the upstream MTA.
    Serve {
        /// Config file.
        #[arg(long, short, default_value = "config/moat.toml")]
        config: PathBuf,
        /// Listen address (repeatable); replaces server.listen from the config.
        #[arg(long, value_name = "ADDR")]
        listen: Vec<String>,
        /// Upstream MTA host:port; replaces upstream.address from the config.
        #[arg(long, value_name = "HOST:PORT")]
        upstream: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Serve {
            config,
            listen,
            upstream,
        } => serve(config, listen, upstream),
    }
}

fn load(
    path: &PathBuf,
    listen: Vec<String>,
    upstream: Option<String>,
) -> Result<Config, moat::config::ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| moat::config::ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let mut config = Config::parse(&text, path)?;
    if !listen.is_empty() {
        config.server.listen = listen;
    }
    if let Some(up) = upstream {
        config.upstream.address = up;
    }
    config.validate()?;
    Ok(config)
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        moat::config::LogFormat::Json => builder.json().init(),
        moat::config::LogFormat::Text => builder.init(),
    }
}

fn serve(path: PathBuf, listen: Vec<String>, upstream: Option<String>) -> ExitCode {
    let config = match load(&path, listen, upstream) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("moat: configuration error:\n{e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("moat: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("moat: {e:#}");
            match e.downcast_ref::<moat::server::StartError>() {
                Some(moat::server::StartError::Bind(_)) => ExitCode::from(1),
                Some(_) => ExitCode::from(2),
                None => ExitCode::from(1),
            }
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let server = moat::server::Server::start(&config)
        .await
        .context("start-up failed")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        r = tokio::signal::ctrl_c() => { r.context("waiting for SIGINT")?; tracing::info!("SIGINT: shutting down") }
    }
    server.shutdown().await;
    Ok(())
}
