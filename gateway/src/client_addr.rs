//! Who the client is: the address of the connection, or, when that is a trusted proxy's, the address
//! the proxies report. Everything keyed per client (the rate limit, the login limits) goes by this, so
//! a client cannot pick its own key by sending `X-Forwarded-For`, and clients behind a proxy do not all
//! share the proxy's.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

/// The trusted proxies: addresses and networks.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// From the configured list, each an address or a network (`10.0.0.0/8`).
    pub fn parse(list: &[String]) -> Result<Self, String> {
        list.iter().map(|p| cluster_config::parse_proxy(p)).collect::<Result<_, _>>().map(TrustedProxies)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|&(net, len)| contains(canonical(net), len, ip))
    }

    /// The client of a request that came over a connection from `peer`: walking the reported chain
    /// from the nearest hop outwards, the first address that is not a trusted proxy's. A hop that
    /// reports nothing usable (`unknown`, an obfuscated name) ends the walk at the last known address.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer.ip());
        if !self.trusts(client) {
            return client;
        }
        for hop in reported_chain(headers).into_iter().rev() {
            match hop {
                Some(ip) => {
                    client = canonical(ip);
                    if !self.trusts(client) {
                        break;
                    }
                }
                None => break,
            }
        }
        client
    }
}

/// An IPv4 address mapped into IPv6 counts as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// The addresses the proxies reported, farthest first: `Forwarded` (RFC 7239) when present, else
/// `X-Forwarded-For`; `None` for a hop whose address is not one.
fn reported_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let joined = |name: &str| -> Option<String> {
        let values: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    if let Some(forwarded) = joined("forwarded") {
        return forwarded
            .split(',')
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| parse_node(v.trim().trim_matches('"')))
            })
            .collect();
    }
    joined("x-forwarded-for").map(|xff| xff.split(',').map(|h| parse_node(h.trim())).collect()).unwrap_or_default()
}

/// `192.0.2.1`, `192.0.2.1:8080`, `[2001:db8::1]` or `[2001:db8::1]:8080`, or a bare IPv6 address.
fn parse_node(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).and_then(|t| t.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).expect("name"), v.parse().expect("value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8".into()]).expect("parses");
        let peer: SocketAddr = "203.0.113.9:5555".parse().expect("addr");
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(trusted.client(peer, &h), ip("203.0.113.9"));
        assert_eq!(TrustedProxies::default().client("10.1.1.1:1".parse().expect("addr"), &h), ip("10.1.1.1"));
    }

    #[test]
    fn behind_trusted_proxies_the_first_untrusted_hop_from_the_right_is_the_client() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8".into(), "192.0.2.7".into()]).expect("parses");
        let peer: SocketAddr = "10.0.0.2:80".parse().expect("addr");
        // The client prepended a made-up address; the proxies appended what they saw.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.4"), ("x-forwarded-for", "192.0.2.7")]);
        assert_eq!(trusted.client(peer, &h), ip("198.51.100.4"));
        let h = headers(&[("forwarded", "for=6.6.6.6, for=\"[2001:db8::5]:4711\";proto=https, for=10.3.3.3")]);
        assert_eq!(trusted.client(peer, &h), ip("2001:db8::5"), "Forwarded wins, IPv6 in brackets");
        let h = headers(&[("x-forwarded-for", "6.6.6.6, unknown")]);
        assert_eq!(trusted.client(peer, &h), ip("10.0.0.2"), "a hop that does not say stops the walk");
        assert_eq!(trusted.client(peer, &HeaderMap::new()), ip("10.0.0.2"), "nothing reported: the proxy");
        let mapped: SocketAddr = "[::ffff:10.0.0.2]:80".parse().expect("addr");
        let h = headers(&[("x-forwarded-for", "198.51.100.4")]);
        assert_eq!(trusted.client(mapped, &h), ip("198.51.100.4"), "IPv4-mapped peers are trusted as IPv4");
    }

    #[test]
    fn networks_match_by_prefix() {
        assert!(contains(ip("10.0.0.0"), 8, ip("10.255.1.2")));
        assert!(!contains(ip("10.0.0.0"), 8, ip("11.0.0.1")));
        assert!(contains(ip("0.0.0.0"), 0, ip("8.8.8.8")));
        assert!(contains(ip("2001:db8::"), 32, ip("2001:db8:ffff::1")));
        assert!(!contains(ip("2001:db8::"), 32, ip("2001:db9::1")));
        assert!(!contains(ip("10.0.0.0"), 8, ip("::1")));
    }
}
