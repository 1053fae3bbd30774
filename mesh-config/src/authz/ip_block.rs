//! Addresses as AuthorizationPolicies write them (`ipBlocks`, `remoteIpBlocks`, the `source.ip`,
//! `remote.ip` and `destination.ip` conditions): one address (`10.1.2.3`, `2001:db8::1`) or a
//! CIDR (`10.0.0.0/8`, `2001:db8::/32`). The validator parses them with the same code, so a
//! value the evaluator meets has been accepted before; the evaluator still treats an
//! unparsable value as matching nothing rather than trusting that.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A network: an address and how many leading bits of it count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBlock {
    network: IpAddr,
    prefix: u8,
}

/// Why a value is not an address or a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpBlockError {
    #[error("empty address")]
    Empty,
    #[error("{0:?} is not an IPv4 or IPv6 address")]
    Address(String),
    #[error("prefix length {0:?} is not a number")]
    PrefixNotNumber(String),
    #[error("prefix length {len} is more than {max}, the length of the address")]
    PrefixTooLong { len: u32, max: u8 },
}

impl IpBlock {
    /// Whether `ip` is inside. An IPv4 address that arrives IPv4-mapped (`::ffff:10.1.2.3`,
    /// as a dual-stack socket reports it) is compared as the IPv4 address it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// Whether a value as written in a policy contains `ip`; an unparsable one does not.
    pub fn value_contains(value: &str, ip: IpAddr) -> bool {
        value.parse::<IpBlock>().is_ok_and(|b| b.contains(ip))
    }
}

impl FromStr for IpBlock {
    type Err = IpBlockError;

    /// Host bits after the prefix are allowed and ignored (`10.1.2.3/8` is `10.0.0.0/8`), as
    /// Istio's own parser (Go's `netip.ParsePrefix`) accepts them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(IpBlockError::Empty);
        }
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| IpBlockError::Address(addr.to_string()))?;
        let max: u8 = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match len {
            None => max,
            Some(len) => {
                let n: u32 = len
                    .parse()
                    .map_err(|_| IpBlockError::PrefixNotNumber(len.to_string()))?;
                match u8::try_from(n) {
                    Ok(n) if n <= max => n,
                    _ => return Err(IpBlockError::PrefixTooLong { len: n, max }),
                }
            }
        };
        Ok(IpBlock { network, prefix })
    }
}

impl fmt::Display for IpBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}
