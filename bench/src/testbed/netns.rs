//! Hosts in network namespaces on one machine: a hub namespace holding a
//! bridge, and one namespace per host, joined to the bridge by a veth pair
//! whose host end's egress (the host's uplink) is shaped by the kernel
//! (`tbf`). Nothing is created outside these namespaces, so traffic between
//! the hosts never leaves them. Every name starts with [`PREFIX`], so that
//! what a crashed run left can be found and removed ([`clean`]) without
//! touching anything else.
//!
//! Hosts are numbered from 0; host `i` has the address `10.77.(i / 250).(i %
//! 250 + 1)/16` on its `eth0`, and a fixed MAC address ([`mac`]).
//!
//! Every host knows every other host's MAC address from the start (static,
//! permanent neighbour entries): the kernel's ARP cache is one table for
//! all namespaces, 1,024 entries by default, and about 80 busy hosts with
//! dozens of peers each fill it ("neighbor table overflow"), after which
//! newcomers can reach nobody. Permanent entries are not counted against
//! that limit, and need no ARP traffic.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// The first characters of every namespace this module creates.
pub const PREFIX: &str = "sp2a-tb-";

/// The most hosts one network holds (the address plan's limit).
pub const MAX_HOSTS: usize = 250 * 250;

/// How a host's uplink is shaped.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    /// Bytes per second out of the host; `None`: as fast as the machine goes.
    pub rate: Option<u64>,
    /// The longest a packet may wait in the uplink's queue before the kernel
    /// drops it: a modem's buffer.
    pub queue: Duration,
    /// How the uplink's queue is served.
    pub queueing: Queueing,
}

/// How an uplink's queue is served (fair queueing is not among the
/// schedulers every kernel offers; these two need only `tbf`, `htb`,
/// `bfifo` and the `u32` classifier).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Queueing {
    /// One first-in first-out queue (`tbf`): a simple modem, where a
    /// host's own uploads delay its acknowledgements and requests.
    Fifo,
    /// Packets under 256 bytes (acknowledgements, requests, DHT messages)
    /// before bulk data (`htb` with two classes, `u32` on the IP length),
    /// as routers that prioritise small packets do.
    SmallFirst,
}

/// One host: its namespace and address.
#[derive(Clone, Debug)]
pub struct Host {
    pub namespace: String,
    pub address: Ipv4Addr,
}

/// A bridge and the hosts on it. Dropping it removes every namespace it
/// made (the processes still in them must have ended: a namespace lives on
/// while a process is inside).
#[derive(Debug)]
pub struct Network {
    hub: String,
    hosts: Vec<Host>,
    removed: bool,
}

/// Checks that this process can make namespaces: root, `ip netns` and `tc`
/// work, and no earlier run's namespaces are left over. The error says what
/// is missing.
pub fn preflight() -> anyhow::Result<()> {
    if effective_uid() != Some(0) {
        bail!(
            "the testbed needs root: it creates network namespaces, veth pairs and \
             traffic shaping (run it as root, e.g. with sudo)"
        );
    }
    check_ip_netns("the testbed")?;
    let tc = Command::new("tc")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !tc.is_ok_and(|s| s.success()) {
        bail!("the testbed needs `tc` (iproute2) to shape the uplinks");
    }
    let left = leftovers()?;
    if !left.is_empty() {
        bail!(
            "{} namespace(s) of an earlier testbed run are still there ({}...); \
             remove them with `sp2a bench testbed --clean`",
            left.len(),
            left[0]
        );
    }
    Ok(())
}

/// Whether `ip netns` works here; the error names what needs it (`who`).
pub(super) fn check_ip_netns(who: &str) -> anyhow::Result<()> {
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match netns {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => bail!(
            "`ip netns` does not work here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => bail!("{who} needs `ip` with netns support (iproute2): {e}"),
    }
}

/// Removes every namespace whose name starts with [`PREFIX`] (what a killed
/// run left behind); returns how many.
pub fn clean() -> anyhow::Result<usize> {
    clean_prefixed(PREFIX)
}

/// Removes every namespace whose name starts with `prefix`, ending the
/// processes still inside; returns how many.
pub(super) fn clean_prefixed(prefix: &str) -> anyhow::Result<usize> {
    let left = leftovers_prefixed(prefix)?;
    for namespace in &left {
        // Processes still inside keep a namespace alive: end them first.
        let _ = Command::new("ip")
            .args(["netns", "pids", namespace])
            .output()
            .map(|out| {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            });
        run(Command::new("ip").args(["netns", "del", namespace]))?;
    }
    Ok(left.len())
}

fn leftovers() -> anyhow::Result<Vec<String>> {
    leftovers_prefixed(PREFIX)
}

/// The namespaces whose names start with `prefix`.
pub(super) fn leftovers_prefixed(prefix: &str) -> anyhow::Result<Vec<String>> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("cannot run `ip netns list`")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect())
}

/// The effective user id, from `/proc/self/status` (Linux).
pub(super) fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Host `index`'s address.
pub fn address(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, (index / 250) as u8, (index % 250 + 1) as u8)
}

/// Host `index`'s MAC address (locally administered, unicast).
pub fn mac(index: usize) -> String {
    format!(
        "02:77:00:{:02x}:{:02x}:{:02x}",
        (index >> 16) & 0xff,
        (index >> 8) & 0xff,
        index & 0xff
    )
}

impl Network {
    /// Creates the hub with its bridge and `hosts` hosts on it, each uplink
    /// shaped as `link` says.
    pub fn create(hosts: usize, link: Link) -> anyhow::Result<Network> {
        anyhow::ensure!(
            (1..=MAX_HOSTS).contains(&hosts),
            "a testbed holds 1 to {MAX_HOSTS} hosts"
        );
        let mut network = Network {
            hub: format!("{PREFIX}hub"),
            hosts: (0..hosts)
                .map(|i| Host {
                    namespace: format!("{PREFIX}{i}"),
                    address: address(i),
                })
                .collect(),
            removed: false,
        };
        // Until `network` is returned, dropping it undoes what was made.
        network.build(link)?;
        Ok(network)
    }

    fn build(&mut self, link: Link) -> anyhow::Result<()> {
        // The namespaces and the veth pairs, each end created right in its
        // namespace (`netns` on both ends): nothing appears in the caller's.
        let mut root = format!("netns add {}\n", self.hub);
        for (i, host) in self.hosts.iter().enumerate() {
            root += &format!("netns add {}\n", host.namespace);
            root += &format!(
                "link add v{i} netns {} type veth peer name eth0 address {} netns {}\n",
                self.hub,
                mac(i),
                host.namespace
            );
        }
        batch(&["ip"], &root).context("cannot create the namespaces")?;
        let mut hub = String::from("link add br0 type bridge\nlink set br0 up\nlink set lo up\n");
        for i in 0..self.hosts.len() {
            hub += &format!("link set v{i} master br0\nlink set v{i} up\n");
        }
        batch(&["ip", "-n", &self.hub], &hub).context("cannot build the bridge")?;
        // Every host's neighbours, written once: the same lines in each
        // host but its own.
        let neighbours: Vec<String> = (0..self.hosts.len())
            .map(|i| {
                format!(
                    "neigh add {} lladdr {} dev eth0 nud permanent\n",
                    address(i),
                    mac(i)
                )
            })
            .collect();
        for (i, host) in self.hosts.iter().enumerate() {
            let mut setup = format!(
                "addr add {}/16 dev eth0\nlink set eth0 up\nlink set lo up\n",
                host.address
            );
            for (j, line) in neighbours.iter().enumerate() {
                if j != i {
                    setup += line;
                }
            }
            batch(&["ip", "-n", &host.namespace], &setup)
                .with_context(|| format!("cannot set up {}", host.namespace))?;
            if let Some(rate) = link.rate {
                batch(&["tc", "-n", &host.namespace], &shaping(rate, link))
                    .with_context(|| format!("cannot shape the uplink of {}", host.namespace))?;
            }
        }
        Ok(())
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// A command that runs `program` inside host `index`'s namespace.
    pub fn command(&self, index: usize, program: &std::path::Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("ip");
        command
            .args(["netns", "exec", &self.hosts[index].namespace])
            .arg(program);
        command
    }

    /// Removes the namespaces (and with them the veth pairs and the bridge).
    pub fn remove(&mut self) -> anyhow::Result<()> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        let mut script = String::new();
        for namespace in self.hosts.iter().map(|h| &h.namespace).chain([&self.hub]) {
            script += &format!("netns del {namespace}\n");
        }
        // `-force`: go on past a namespace that is already gone.
        batch(&["ip", "-force"], &script).context("cannot remove the namespaces")
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("warning: {e:#}; `sp2a bench testbed --clean` removes what is left");
        }
    }
}

/// tc commands that shape eth0's egress to `rate` bytes/s. Bursts are at
/// most 32 KiB (two blocks and headers; at least what the rate sends in one
/// 4 ms timer tick); the bulk queue holds `link.queue` at the rate.
fn shaping(rate: u64, link: Link) -> String {
    let bits = rate * 8;
    let burst = (rate / 250).max(32 * 1024);
    let queue_ms = link.queue.as_millis().max(1);
    match link.queueing {
        Queueing::Fifo => format!(
            "qdisc add dev eth0 root tbf rate {bits}bit burst {burst} latency {queue_ms}ms\n"
        ),
        Queueing::SmallFirst => {
            let limit = (rate as u128 * queue_ms / 1000).max(2 * 1500) as u64;
            let small = (bits / 8).max(8 * 1024);
            format!(
                "qdisc add dev eth0 root handle 1: htb default 20\n\
                 class add dev eth0 parent 1: classid 1:1 htb rate {bits}bit burst {burst}\n\
                 class add dev eth0 parent 1:1 classid 1:10 htb rate {small}bit ceil {bits}bit burst {burst} prio 0\n\
                 class add dev eth0 parent 1:1 classid 1:20 htb rate {bulk}bit ceil {bits}bit burst {burst} prio 1\n\
                 qdisc add dev eth0 parent 1:20 bfifo limit {limit}\n\
                 filter add dev eth0 parent 1: protocol ip prio 1 u32 match u16 0x0000 0xff00 at 2 flowid 1:10\n",
                bulk = bits.saturating_sub(small).max(8 * 1024),
            )
        }
    }
}

/// Runs `program` with `-batch -`, feeding it `script`.
pub(super) fn batch(program: &[&str], script: &str) -> anyhow::Result<()> {
    let mut child = Command::new(program[0])
        .args(&program[1..])
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", program[0]))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            program.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub(super) fn run(command: &mut Command) -> anyhow::Result<()> {
    let out = command.output().context("cannot run a command")?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_and_never_the_network_or_broadcast() {
        let all: std::collections::HashSet<_> = (0..MAX_HOSTS).map(address).collect();
        assert_eq!(all.len(), MAX_HOSTS);
        for a in &all {
            assert_eq!(&a.octets()[..2], &[10, 77]);
            assert_ne!(a.octets()[3], 0);
            assert!(a.octets()[3] <= 250);
        }
    }

    #[test]
    fn macs_are_distinct_unicast_and_locally_administered() {
        let all: std::collections::HashSet<_> = (0..MAX_HOSTS).map(mac).collect();
        assert_eq!(all.len(), MAX_HOSTS);
        assert_eq!(mac(0), "02:77:00:00:00:00");
        assert_eq!(mac(62_499), "02:77:00:00:f4:23");
    }

    #[test]
    fn the_shaper_carries_the_rate_in_bits_and_the_queue() {
        let link = |queueing| Link {
            rate: Some(64 * 1024),
            queue: Duration::from_millis(200),
            queueing,
        };
        let fifo = shaping(64 * 1024, link(Queueing::Fifo));
        assert_eq!(
            fifo,
            "qdisc add dev eth0 root tbf rate 524288bit burst 32768 latency 200ms\n"
        );
        // A fast link's burst covers one 4 ms tick at its rate.
        let fast = shaping(100 << 20, link(Queueing::Fifo));
        assert!(
            fast.contains(&format!("burst {} ", (100u64 << 20) / 250)),
            "{fast}"
        );
        let small_first = shaping(64 * 1024, link(Queueing::SmallFirst));
        assert!(
            small_first.contains("classid 1:1 htb rate 524288bit"),
            "{small_first}"
        );
        // The bulk class's queue holds 200 ms at 64 KiB/s.
        assert!(small_first.contains("bfifo limit 13107\n"), "{small_first}");
        // Small IP packets (total length < 256) go to the first class.
        assert!(
            small_first.contains("u32 match u16 0x0000 0xff00 at 2 flowid 1:10"),
            "{small_first}"
        );
    }
}
