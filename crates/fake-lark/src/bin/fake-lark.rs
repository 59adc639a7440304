//! `fake-lark`: play Lark's long-connection side locally (discovery + WebSocket), to try
//! `source.kind = "long_connection"` without a Lark account.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "fake-lark",
    version,
    about = "A fake of Lark's long-connection side"
)]
struct Cli {
    #[command(flatten)]
    args: fake_lark::longconn::FakeLarkArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match fake_lark::longconn::run_cli(cli.args, stop).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
