//! `lark-load`: Lark's push side at volume — the benchmark's and the fault soak's load generator.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "lark-load",
    version,
    about = "Load generator playing Lark's push side"
)]
struct Cli {
    #[command(flatten)]
    args: fake_lark::load::LoadArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match fake_lark::load::run(cli.args).await {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
