//! Argument parsing and start-up only; everything else lives in the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lark_bridge::config::{Config, SecretFiles};

/// mimalloc instead of glibc malloc: malloc/free were 10–20 % of the bridge's CPU in the
/// benchmark's profiles, much of it buffers allocated on one worker thread and freed on
/// another, which glibc's per-thread arenas handle poorly (BENCHMARKS.md).
///
/// Wrapped in a counter that counts only in benchmarks (`LARK_BRIDGE_BENCH_COUNT_ALLOCATIONS=1`,
/// see `lark_bridge::alloc_count`); off, it costs a relaxed load per allocation.
#[global_allocator]
static GLOBAL: lark_bridge::alloc_count::Counting<mimalloc::MiMalloc> =
    lark_bridge::alloc_count::Counting(mimalloc::MiMalloc);

unsafe extern "C" {
    /// mimalloc's own: free what the calling thread's heap holds and purge freed pages back to
    /// the OS (linked in with the allocator above).
    fn mi_collect(force: bool);
}

/// Return freed memory to the OS when a runtime worker goes idle, at most once a second per
/// thread. mimalloc purges freed pages only on later allocator activity in the thread that
/// owns them, so after a burst (1,024 bodies of 1 MiB, issue 15) an idle process kept its
/// peak RSS; collecting on park brings it back near idle within a second or two.
fn trim_on_park() {
    use std::cell::Cell;
    use std::time::{Duration, Instant};
    thread_local!(static LAST: Cell<Option<Instant>> = const { Cell::new(None) });
    LAST.with(|last| {
        if last
            .get()
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            last.set(Some(Instant::now()));
            // SAFETY: mi_collect takes no pointers; it only walks the allocator's own state.
            unsafe { mi_collect(false) };
        }
    });
}

#[derive(Parser)]
#[command(
    name = "lark-bridge",
    version,
    about = "Lark (Feishu) events → CloudEvents on Kafka or NATS JetStream"
)]
struct Cli {
    /// TOML config file (also LARK_BRIDGE_CONFIG).
    #[arg(long, global = true, env = "LARK_BRIDGE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge (the default).
    Run,
    /// Validate the layered config and print it, secrets as ***.
    CheckConfig {
        /// Check structure only; do not read secret files.
        #[arg(long)]
        skip_secret_files: bool,
    },
    /// Smoke-test a deployment: send signed, encrypted ticket.created events as Lark does and
    /// print each answer (exits non-zero unless every answer is 200).
    Simulate(lark_bridge::simulate::SimulateArgs),
    /// Move dead letters back to their normal destination once the normalizer accepts them;
    /// re-file those that still fail. Prints one line per letter and the counts; exits
    /// non-zero on a broker error.
    Redrive(lark_bridge::redrive::RedriveArgs),
    /// Subscribe to the helpdesk events of `lark.events` through Lark's API (the bridge also
    /// does it at start); prints each call's result and exits non-zero when one fails.
    Subscribe(lark_bridge::subscription::SubscribeArgs),
}

fn main() -> std::process::ExitCode {
    if std::env::var_os("LARK_BRIDGE_BENCH_COUNT_ALLOCATIONS").is_some_and(|v| v == "1") {
        lark_bridge::alloc_count::enable();
    }
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(trim_on_park)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(real_main(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Scrubbed: a client library's start-up error may echo a configured secret.
            let msg = lark_bridge::secrets::scrub_known(format!("{e:#}"));
            eprintln!("error: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig { skip_secret_files } => {
            let mode = if skip_secret_files {
                SecretFiles::Skip
            } else {
                SecretFiles::Read
            };
            let cfg = Config::load(cli.config.as_deref(), mode)?;
            print!("{}", cfg.to_redacted_toml());
            let w = cfg.worst_case_buffers();
            let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
            println!(
                "\n# worst case of request buffers: {:.1} MiB = bodies {:.1} MiB \
                 (server.max_buffered_body_bytes) + webhook heads {:.1} MiB \
                 (server.max_connections x read buffer) + admin heads {:.1} MiB; \
                 the memory limit must cover this plus the process itself and its dedup store",
                mib(w.total()),
                mib(w.bodies),
                mib(w.webhook_heads),
                mib(w.admin_heads)
            );
            eprintln!("config ok");
            Ok(())
        }
        Command::Simulate(args) => {
            lark_bridge::simulate::run(args).await?;
            Ok(())
        }
        Command::Redrive(args) => {
            let cfg = Config::load(cli.config.as_deref(), SecretFiles::Read)?;
            let c = lark_bridge::redrive::run(&cfg, &args).await?;
            println!(
                "read {}, redriven {}, still failing {}, skipped {}, unreadable {}{}",
                c.read,
                c.redriven,
                c.still_failing,
                c.skipped,
                c.unreadable,
                if args.dry_run {
                    " (dry run: nothing published or acknowledged)"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Command::Subscribe(args) => {
            let cfg = Config::load(cli.config.as_deref(), SecretFiles::Read)?;
            lark_bridge::subscription::run_command(&cfg, &args)
                .await
                .map_err(anyhow::Error::msg)
        }
        Command::Run => {
            let cfg = Config::load(cli.config.as_deref(), SecretFiles::Read)?;
            lark_bridge::telemetry::init(&cfg.log, &cfg.otel)?;
            let components = lark_bridge::Components::from_config(&cfg).await?;
            let webhook = match cfg.source.kind {
                lark_bridge::config::SourceKind::Webhook => Some(
                    tokio::net::TcpListener::bind(&cfg.server.listen)
                        .await
                        .with_context(|| {
                            format!("server.listen: cannot bind {}", cfg.server.listen)
                        })?,
                ),
                lark_bridge::config::SourceKind::LongConnection => None,
            };
            let admin = tokio::net::TcpListener::bind(&cfg.admin.listen)
                .await
                .with_context(|| format!("admin.listen: cannot bind {}", cfg.admin.listen))?;
            lark_bridge::run(
                cfg,
                components,
                lark_bridge::Listeners { webhook, admin },
                shutdown_signal(),
            )
            .await?;
            lark_bridge::telemetry::shutdown(std::time::Duration::from_secs(5)).await;
            Ok(())
        }
    }
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received");
}
