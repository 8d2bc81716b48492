//! `sp2a demo`: the demo of `sp2a_bench::demo`.

use std::process::ExitCode;

pub async fn run(options: sp2a_bench::demo::Options) -> anyhow::Result<ExitCode> {
    sp2a_bench::demo::run(options).await
}
