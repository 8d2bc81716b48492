//! `sp2a feed publish`: a live feed's source. It runs a node of its own,
//! announces the feed and publishes one signed segment per period, cut
//! from a file (played on repeat) or made by a generator, until Ctrl-C or
//! `--count` segments.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use sp2a::feed::{MAX_SEGMENT_DATA, is_feed_name};
use sp2a::package::units::{format_size, parse_duration, parse_size};

use crate::node::NodeArgs;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Publish a live feed: one segment per period, signed with the
    /// source's key. Services read it when their manifest declares
    /// `<feed name="NAME" publisher="KEY"/>` with this key.
    Publish(PublishArgs),
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The feed's name.
    #[arg(long)]
    name: String,
    /// The source's private key (PEM from `sp2a keygen`, or an OpenSSH
    /// ed25519 key); its public key is what manifests declare as the feed's
    /// publisher.
    #[arg(long)]
    key: PathBuf,
    /// Cut the segments from this file, played on repeat; without it a
    /// generator makes them (numbered test segments).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Bytes per segment (at most 60 KiB).
    #[arg(long, default_value = "16 KiB")]
    segment: String,
    /// One segment per period.
    #[arg(long, default_value = "1s")]
    every: String,
    /// Stop after this many segments (default: until Ctrl-C).
    #[arg(long)]
    count: Option<u64>,
    /// The first segment's number (default: seconds since the Unix epoch,
    /// so that a restarted source goes on counting up).
    #[arg(long)]
    first: Option<u64>,
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Publish(args) => publish(args).await,
    }
}

/// A generated segment: a text header naming it, then filler that depends
/// on the number (so every segment differs).
fn generated(index: u64, len: usize) -> Vec<u8> {
    let mut data = format!("sp2a live feed segment {index}\n").into_bytes();
    let mut state = index.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.push(b'a' + (state % 26) as u8);
    }
    data.truncate(len);
    data
}

async fn publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    if !is_feed_name(&args.name) {
        bail!(
            "--name {:?}: a feed name is 1-64 of a-z, 0-9, '-', '_', '.'",
            args.name
        );
    }
    let key = crate::read_secret_key(&args.key)?;
    let segment = parse_size(&args.segment).map_err(|e| anyhow::anyhow!("--segment: {e}"))?;
    let segment = usize::try_from(segment).unwrap_or(usize::MAX);
    if segment == 0 || segment > MAX_SEGMENT_DATA {
        bail!(
            "--segment: 1 byte to {} per segment",
            format_size(MAX_SEGMENT_DATA as u64)
        );
    }
    let every = parse_duration(&args.every).map_err(|e| anyhow::anyhow!("--every: {e}"))?;
    if every < Duration::from_millis(10) {
        bail!("--every: at least 10ms");
    }
    let file = match &args.file {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            if bytes.is_empty() {
                bail!("{} is empty", path.display());
            }
            Some(bytes)
        }
        None => None,
    };
    let first = args.first.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let publisher = key.public();
    let config = args.node.configure(Vec::new())?;
    let node = crate::node::start(&config).await?;
    let mut source = node
        .feed_source(&args.name, key, first)
        .await
        .context("cannot start the feed")?;
    println!("peer id {}", node.peer_id());
    for address in node.addresses().await {
        println!("listening on {address}");
    }
    println!(
        "publishing feed {:?} from {} ({} every {:?})",
        args.name,
        publisher,
        format_size(segment as u64),
        every
    );
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut offset = 0usize;
    let mut published = 0u64;
    let stop = crate::node::wait_for_signal();
    tokio::pin!(stop);
    while args.count.is_none_or(|count| published < count) {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => break,
        }
        let data = match &file {
            Some(bytes) => {
                let mut data = Vec::with_capacity(segment);
                while data.len() < segment {
                    let take = (segment - data.len()).min(bytes.len() - offset);
                    data.extend_from_slice(&bytes[offset..offset + take]);
                    offset = (offset + take) % bytes.len();
                }
                data
            }
            None => generated(first + published, segment),
        };
        let index = source.publish(data).await?;
        println!("segment {index}");
        published += 1;
    }
    node.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_segments_differ_and_have_their_size() {
        let a = super::generated(1, 1000);
        let b = super::generated(2, 1000);
        assert_eq!((a.len(), b.len()), (1000, 1000));
        assert_ne!(a, b);
        assert!(a.starts_with(b"sp2a live feed segment 1\n"));
        assert_eq!(super::generated(5, 4).len(), 4);
    }
}
