//! Emulated home networks in network namespaces, for nodes behind NATs:
//!
//! * **internet**: a namespace holding a bridge, `203.0.113.0/24`
//!   (documentation addresses, global to the node's address rules), with two
//!   public hosts, `pub0` (`.10`) and `pub1` (`.11`);
//! * **homes A, B and C**: each a NAT router (`router-a` ...: `.2`, `.3`,
//!   `.4` on the bridge, `192.168.N.1` inside) with one host behind it
//!   (`home-a` ...: `192.168.N.2`, its default route through the router).
//!   A and B masquerade port-preserving ("easy" NATs, which hole punching
//!   gets through); C masquerades with random ports per connection
//!   (`--random-fully`: a symmetric NAT, which defeats hole punching).
//!
//! Public hosts have no route into the homes: a home host is reached only
//! through a connection it opened. Every namespace's name starts with
//! [`PREFIX`]; nothing is created outside them, so traffic stays inside,
//! and [`clean`] removes what a killed run left. Needs root, `ip netns` and
//! `iptables` ([`preflight`]).

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::netns::{
    batch, check_ip_netns, clean_prefixed, effective_uid, leftovers_prefixed, run as run_command,
};

/// The first characters of every namespace made here.
pub const PREFIX: &str = "sp2a-hn-";

/// How a home's router translates addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    /// Port-preserving masquerade: a host's outgoing connections keep their
    /// source port where it is free ("easy", endpoint-independent).
    Easy,
    /// A random source port for every connection (symmetric).
    Symmetric,
}

/// One host: its name, namespace and address.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: &'static str,
    pub namespace: String,
    pub address: Ipv4Addr,
}

/// One home: its router (WAN address on the internet) and its host.
#[derive(Clone, Debug)]
pub struct Home {
    pub router: Host,
    pub host: Host,
    pub nat: Nat,
}

/// The topology. Dropping it removes every namespace it made.
#[derive(Debug)]
pub struct HomeNetworks {
    pub public: Vec<Host>,
    pub homes: Vec<Home>,
    internet: String,
    removed: bool,
}

fn host(name: &'static str, address: Ipv4Addr) -> Host {
    Host {
        name,
        namespace: format!("{PREFIX}{name}"),
        address,
    }
}

/// Checks that this process can build the topology: root, `ip netns` and
/// `iptables` work, and no earlier run's namespaces are left. The error
/// says what is missing.
pub fn preflight() -> anyhow::Result<()> {
    if effective_uid() != Some(0) {
        bail!(
            "the home networks need root: they create network namespaces, veth pairs \
             and NAT rules (run it as root, e.g. with sudo)"
        );
    }
    check_ip_netns("the home networks")?;
    let iptables = Command::new("iptables")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !iptables.is_ok_and(|s| s.success()) {
        bail!(
            "the home networks need `iptables` for their NAT routers (Debian: apt-get install iptables)"
        );
    }
    let left = leftovers_prefixed(PREFIX)?;
    if !left.is_empty() {
        bail!(
            "{} namespace(s) of earlier home networks are still there ({}...); \
             remove them with `sp2a bench homes down`",
            left.len(),
            left[0]
        );
    }
    Ok(())
}

/// Removes every namespace whose name starts with [`PREFIX`], ending the
/// processes still inside; returns how many.
pub fn clean() -> anyhow::Result<usize> {
    clean_prefixed(PREFIX)
}

impl HomeNetworks {
    /// Builds the topology (after [`preflight`]).
    pub fn create() -> anyhow::Result<Self> {
        preflight()?;
        let internet = |last| Ipv4Addr::new(203, 0, 113, last);
        let home = |router, name, n, nat| Home {
            router: host(router, internet(1 + n)),
            host: host(name, Ipv4Addr::new(192, 168, n, 2)),
            nat,
        };
        let mut networks = Self {
            public: vec![host("pub0", internet(10)), host("pub1", internet(11))],
            homes: vec![
                home("router-a", "home-a", 1, Nat::Easy),
                home("router-b", "home-b", 2, Nat::Easy),
                home("router-c", "home-c", 3, Nat::Symmetric),
            ],
            internet: format!("{PREFIX}internet"),
            removed: false,
        };
        // Until it is returned, dropping it undoes what was made.
        networks.build()?;
        Ok(networks)
    }

    fn build(&mut self) -> anyhow::Result<()> {
        let on_bridge: Vec<&Host> = self
            .public
            .iter()
            .chain(self.homes.iter().map(|h| &h.router))
            .collect();
        let mut root = format!("netns add {}\n", self.internet);
        for host in on_bridge
            .iter()
            .copied()
            .chain(self.homes.iter().map(|h| &h.host))
        {
            root += &format!("netns add {}\n", host.namespace);
        }
        for (i, host) in on_bridge.iter().enumerate() {
            root += &format!(
                "link add w{i} netns {} type veth peer name eth0 netns {}\n",
                self.internet, host.namespace
            );
        }
        for home in &self.homes {
            root += &format!(
                "link add eth1 netns {} type veth peer name eth0 netns {}\n",
                home.router.namespace, home.host.namespace
            );
        }
        batch(&["ip"], &root).context("cannot create the namespaces")?;
        let mut bridge =
            String::from("link add br0 type bridge\nlink set br0 up\nlink set lo up\n");
        for i in 0..on_bridge.len() {
            bridge += &format!("link set w{i} master br0\nlink set w{i} up\n");
        }
        batch(&["ip", "-n", &self.internet], &bridge).context("cannot build the internet")?;
        for host in &on_bridge {
            batch(
                &["ip", "-n", &host.namespace],
                &format!(
                    "addr add {}/24 dev eth0\nlink set eth0 up\nlink set lo up\n",
                    host.address
                ),
            )
            .with_context(|| format!("cannot set up {}", host.namespace))?;
        }
        for home in &self.homes {
            let lan = home.host.address.octets();
            let gateway = Ipv4Addr::new(lan[0], lan[1], lan[2], 1);
            batch(
                &["ip", "-n", &home.router.namespace],
                &format!("addr add {gateway}/24 dev eth1\nlink set eth1 up\n"),
            )?;
            batch(
                &["ip", "-n", &home.host.namespace],
                &format!(
                    "addr add {}/24 dev eth0\nlink set eth0 up\nlink set lo up\nroute add default via {gateway}\n",
                    home.host.address
                ),
            )?;
            // A command line run in the router (arguments without spaces).
            let in_router = |line: &str| {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", &home.router.namespace])
                    .args(line.split(' '));
                run_command(&mut command)
            };
            in_router("sysctl -q -w net.ipv4.ip_forward=1")?;
            let masquerade = match home.nat {
                Nat::Easy => "iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE",
                Nat::Symmetric => {
                    "iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE --random-fully"
                }
            };
            in_router(masquerade).context("cannot set up the NAT")?;
            // Nothing from the internet enters the home unless it answers
            // a connection from inside; and the router itself drops what
            // nobody asked for, as home routers do (no reset gives away a
            // closed port, and a hole-punching SYN that arrives a moment
            // early is retried rather than refused).
            in_router(
                "iptables -A FORWARD -i eth0 -m conntrack ! --ctstate ESTABLISHED,RELATED -j DROP",
            )?;
            in_router(
                "iptables -A INPUT -i eth0 -m conntrack ! --ctstate ESTABLISHED,RELATED -j DROP",
            )?;
        }
        Ok(())
    }

    /// Every namespace, the internet's last.
    fn namespaces(&self) -> Vec<&str> {
        self.public
            .iter()
            .chain(self.homes.iter().flat_map(|h| [&h.router, &h.host]))
            .map(|h| h.namespace.as_str())
            .chain([self.internet.as_str()])
            .collect()
    }

    /// Removes every namespace (and with them the links and rules).
    pub fn remove(&mut self) -> anyhow::Result<()> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        let script: String = self
            .namespaces()
            .iter()
            .map(|n| format!("netns del {n}\n"))
            .collect();
        batch(&["ip", "-force"], &script).context("cannot remove the namespaces")
    }

    /// What was made, one line per host.
    pub fn describe(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .public
            .iter()
            .map(|h| format!("{:<9} {:<15} public ({})", h.name, h.address, h.namespace))
            .collect();
        for home in &self.homes {
            lines.push(format!(
                "{:<9} {:<15} behind {} ({} NAT, WAN {}) ({})",
                home.host.name,
                home.host.address,
                home.router.name,
                match home.nat {
                    Nat::Easy => "port-preserving",
                    Nat::Symmetric => "symmetric",
                },
                home.router.address,
                home.host.namespace
            ));
        }
        lines
    }

    /// Leaves the namespaces in place when dropped (`sp2a bench homes up`).
    pub fn keep(mut self) {
        self.removed = true;
    }
}

impl Drop for HomeNetworks {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("warning: {e:#}; `sp2a bench homes down` removes what is left");
        }
    }
}

/// Options of `sp2a bench homes`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// `up`: build the home networks and leave them (prints each host and
    /// its namespace, for `ip netns exec`); `down`: remove them.
    #[arg(value_parser = ["up", "down"])]
    action: String,
}

pub fn run(options: Options) -> anyhow::Result<std::process::ExitCode> {
    match options.action.as_str() {
        "up" => {
            let networks = HomeNetworks::create()?;
            for line in networks.describe() {
                println!("{line}");
            }
            println!("remove them with: sp2a bench homes down");
            networks.keep();
        }
        _ => {
            let removed = clean()?;
            println!("removed {removed} namespace(s)");
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
