//! `sp2a keygen`: create a publisher keypair.

use std::path::PathBuf;
use std::process::ExitCode;

use sp2a::package::SecretKey;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the private key; the public key goes to `<OUT>.pub`.
    #[arg(short, long, default_value = "sp2a-key.pem")]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let key = SecretKey::generate();
    let public_path = key.write_pem_files(&args.out)?;
    println!("private key: {} (keep it secret)", args.out.display());
    println!("public key:  {}", public_path.display());
    println!("publisher:   {}", key.public());
    Ok(ExitCode::SUCCESS)
}
