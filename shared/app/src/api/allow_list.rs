//! Which source addresses may deliver callbacks.

use std::net::IpAddr;

/// Safaricom's published callback source addresses (Safaricom may change them; keep this list current).
pub const SAFARICOM_CALLBACK_IPS: [&str; 12] = [
    "196.201.214.200",
    "196.201.214.206",
    "196.201.213.114",
    "196.201.214.207",
    "196.201.214.208",
    "196.201.213.44",
    "196.201.212.127",
    "196.201.212.138",
    "196.201.212.129",
    "196.201.212.136",
    "196.201.212.74",
    "196.201.212.69",
];

/// The source addresses allowed to deliver callbacks: a second proof of origin besides the
/// payment's own URL token. Empty allows every source. In report mode
/// ([`reporting`](Self::reporting)) a source outside the list is accepted, and counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceAllowList {
    nets: Vec<(IpAddr, u8)>,
    report_only: bool,
}

impl SourceAllowList {
    /// Comma-separated addresses and CIDR blocks (IPv4 or IPv6); the keyword `safaricom`
    /// stands for [`SAFARICOM_CALLBACK_IPS`]. Blank entries are ignored.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry.eq_ignore_ascii_case("safaricom") {
                for ip in SAFARICOM_CALLBACK_IPS {
                    nets.push(parse_net(ip)?);
                }
            } else {
                nets.push(parse_net(entry)?);
            }
        }
        Ok(Self {
            nets,
            report_only: false,
        })
    }

    /// The same list, reporting instead of refusing (`CALLBACK_SOURCE_MODE=report`): no
    /// official list of Safaricom's addresses is published, so a new one would otherwise lose
    /// its callbacks.
    #[must_use]
    pub fn reporting(mut self) -> Self {
        self.report_only = true;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether sources outside the list are accepted (and counted) rather than refused.
    pub fn is_report_only(&self) -> bool {
        self.report_only
    }

    /// Whether a request from `source` (API Gateway's `sourceIp`) may deliver a callback.
    /// With a list set, a missing or unreadable address is refused.
    pub fn allows(&self, source: Option<&str>) -> bool {
        if self.nets.is_empty() {
            return true;
        }
        let Some(ip) = source.and_then(|s| s.trim().parse::<IpAddr>().ok()) else {
            return false;
        };
        let ip = ip.to_canonical();
        self.nets
            .iter()
            .any(|(net, prefix)| in_net(ip, *net, *prefix))
    }
}

fn parse_net(entry: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = match entry.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (entry, None),
    };
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("{entry:?} is not an IP address, a CIDR block or \"safaricom\""))?;
    let addr = addr.to_canonical();
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{entry:?} has a prefix length outside 0..={max}"))?,
    };
    Ok((addr, prefix))
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let (ip, net, bits) = match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            (u128::from(u32::from(ip)), u128::from(u32::from(net)), 32u32)
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => (u128::from(ip), u128::from(net), 128u32),
        _ => return false,
    };
    let host_bits = bits - u32::from(prefix);
    if host_bits >= 128 {
        return true;
    }
    (ip >> host_bits) == (net >> host_bits)
}
