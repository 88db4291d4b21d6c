//! The `moat` binary: `serve`, `check`, `lint` and `eval`.
//! anyhow lives only here. Exit codes: 0 ok, 1 runtime failure, 2 bad config or usage.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use moat::config::Config;
use std::net::SocketAddr;
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
        /// Nameserver IP:port (UDP and TCP); replaces dns.nameservers from the config.
        #[arg(long, value_name = "HOST:PORT")]
        dns: Option<SocketAddr>,
    },
    /// Validate the config and every rule file; exit 0 when clean, 1 when problems were found.
    Lint {
        /// Config file.
        #[arg(long, short, default_value = "config/moat.toml")]
        config: PathBuf,
    },
    /// Score one message offline with the same pipeline as `serve`.
    ///
    /// Exit code 0: accept or add_header; 1: tempfail or reject; 2: usage or input error.
    /// With --replay: 0 when the recorded verdict is reproduced, 1 when it differs.
    Check(moat::cli::check::CheckArgs),
    /// The messages kept by [quarantine]: list them, show one, or release one to the MTA.
    Quarantine {
        /// Config file (accepted before or after the action: `moat quarantine list --config F`).
        #[arg(long, short, default_value = "config/moat.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: QuarantineAction,
    },
    /// Score folders of known ham and spam offline and report what the rules would do.
    ///
    /// Content rules, lists, MIME checks and the classifier's model, if it has learned (no
    /// DNS: no blocklists, no SPF/DKIM/DMARC). Exit code 0; 1 when more ham is rejected than
    /// --max-false-rejects; 2 on usage errors.
    Eval(moat::cli::eval::EvalArgs),
    /// Train the classifier on ham and spam (files or maildirs), forget messages, or show the
    /// model's size. Exit code 0; 2 on errors.
    Learn(moat::cli::learn::LearnArgs),
}

#[derive(Subcommand, Debug)]
enum QuarantineAction {
    /// One line per kept message, oldest first.
    List {
        /// Print a JSON array of the records instead.
        #[arg(long)]
        json: bool,
    },
    /// The record (why it was refused) and the message.
    Show {
        /// The message's id (from `list`).
        id: String,
    },
    /// Send the message to the MTA with its original envelope; removed once accepted.
    Release {
        /// The message's id (from `list`).
        id: String,
    },
}

fn quarantine(config: PathBuf, action: QuarantineAction) -> ExitCode {
    let config = match Config::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("moat: configuration error:\n{e}");
            return ExitCode::from(2);
        }
    };
    let result = match action {
        QuarantineAction::List { json } => moat::cli::quarantine::list(&config, json),
        QuarantineAction::Show { id } => moat::cli::quarantine::show(&config, &id),
        QuarantineAction::Release { id } => {
            let Some(rt) = runtime() else {
                return ExitCode::from(2);
            };
            rt.block_on(moat::cli::quarantine::release(&config, &id))
                .map(|reply| format!("released {id}: {reply}\n"))
        }
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("moat quarantine: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Quarantine { config, action } => quarantine(config, action),
        Commands::Eval(args) => match moat::cli::eval::run(&args) {
            Ok(report) => {
                print!("{}", report.output);
                ExitCode::from(report.exit_code)
            }
            Err(e) => {
                eprintln!("moat eval: {e:#}");
                ExitCode::from(2)
            }
        },
        Commands::Learn(args) => {
            let Some(rt) = runtime() else {
                return ExitCode::from(2);
            };
            match rt.block_on(moat::cli::learn::run(&args)) {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("moat learn: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Commands::Serve {
            config,
            listen,
            upstream,
            dns,
        } => serve(config, listen, upstream, dns),
        Commands::Lint { config } => {
            let report = moat::cli::lint::run(&config);
            print!("{}", report.output);
            ExitCode::from(report.exit_code)
        }
        Commands::Check(args) => check(args),
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("moat: cannot start the runtime: {e}");
            None
        }
    }
}

fn check(args: moat::cli::check::CheckArgs) -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .try_init();
    }
    let Some(rt) = runtime() else {
        return ExitCode::from(2);
    };
    match rt.block_on(moat::cli::check::run(&args)) {
        Ok(report) => {
            print!("{}", report.output);
            ExitCode::from(report.exit_code)
        }
        Err(e) => {
            eprintln!("moat check: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load(
    path: &PathBuf,
    listen: Vec<String>,
    upstream: Option<String>,
    dns: Option<SocketAddr>,
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
    if let Some(ns) = dns {
        config.dns.nameservers = vec![ns.to_string()];
    }
    config.validate()?;
    Ok(config)
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    // No colour codes in files, pipes or the journal: only a terminal gets them.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log.format {
        moat::config::LogFormat::Json => builder.json().init(),
        moat::config::LogFormat::Text => builder.init(),
    }
}

fn serve(
    path: PathBuf,
    listen: Vec<String>,
    upstream: Option<String>,
    dns: Option<SocketAddr>,
) -> ExitCode {
    let config = match load(&path, listen, upstream, dns) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("moat: configuration error:\n{e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let Some(runtime) = runtime() else {
        return ExitCode::from(1);
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("moat: {e:#}");
            match e.downcast_ref::<moat::app::StartError>() {
                Some(moat::app::StartError::Bind(_)) => ExitCode::from(1),
                Some(_) => ExitCode::from(2),
                None => ExitCode::from(1),
            }
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let server = moat::app::Server::start(&config)
        .await
        .context("start-up failed")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing SIGHUP handler")?;
    let rules = server.rules().clone();
    let cert = server.server_cert().cloned();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading rules and the TLS certificate");
            rules.request_reload();
            match cert.as_ref().map(|c| c.reload()) {
                Some(Ok(())) => tracing::info!("TLS certificate reloaded"),
                Some(Err(e)) => {
                    tracing::error!(error = %e, "TLS certificate reload failed; the previous one stays")
                }
                None => {}
            }
        }
    });
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        r = tokio::signal::ctrl_c() => { r.context("waiting for SIGINT")?; tracing::info!("SIGINT: shutting down") }
    }
    server.shutdown().await;
    Ok(())
}
