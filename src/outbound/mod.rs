//! Outbound connections made on a user's behalf (IMAP mailboxes, webhooks,
//! feeds), made so that they cannot be turned against the server's own
//! network. A target is resolved once, every resolved address is checked by the
//! [`OutboundPolicy`] (public addresses only, unless the operator lists
//! networks in `MAILBEACON_OUTBOUND_ALLOW`), and the connection goes to a
//! checked address: no second lookup, so no DNS rebinding. A refused target is
//! never connected to. Errors ([`OutboundError`]) carry only fixed text: they
//! never echo bytes the peer sent, and closed, filtered and unreachable ports
//! all look alike. `http` is a small HTTP/1.1 client on top of [`connect`].

pub mod http;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::ipnet::IpNet;

/// Which addresses outbound connections may reach: every public address, plus
/// the networks the operator allows (`--outbound-allow`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    pub allow: Vec<IpNet>,
}

impl OutboundPolicy {
    /// Parses a comma-separated list of CIDRs or single addresses
    /// (`"127.0.0.0/8, 10.1.2.3, fd00::/8"`). Whitespace around entries is
    /// ignored; an empty list (or empty string) allows nothing extra.
    pub fn parse(list: &str) -> Result<OutboundPolicy, String> {
        let mut allow = Vec::new();
        let mut bad = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match IpNet::parse(entry) {
                Some(net) => allow.push(net),
                None => bad.push(format!("{entry:?}")),
            }
        }
        if bad.is_empty() {
            Ok(OutboundPolicy { allow })
        } else {
            Err(format!(
                "outbound allow-list: {} is not an IP address or CIDR (expected e.g. \
                 10.0.0.0/8, 192.0.2.7 or fd00::/8, separated by commas)",
                bad.join(", ")
            ))
        }
    }

    /// Returns true if and only if a connection to `ip` is permitted: `ip` is
    /// public, or inside an allowed network (an IPv4-mapped IPv6 address is
    /// also checked as the IPv4 address it stands for).
    pub fn permits(&self, ip: IpAddr) -> bool {
        if is_public(ip) || self.allow.iter().any(|n| n.contains(ip)) {
            return true;
        }
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.allow.iter().any(|n| n.contains(IpAddr::V4(v4))),
                None => false,
            },
            IpAddr::V4(_) => false,
        }
    }
}

/// Returns true if and only if `ip` is a public (globally reachable unicast)
/// address. Refused: unspecified, loopback, private, shared (CGNAT),
/// link-local (cloud metadata), multicast, broadcast, documentation,
/// benchmarking and reserved ranges; IPv6 outside global unicast 2000::/3,
/// unique-local, site-local and IETF special-purpose 2001::/23 (Teredo
/// included). IPv6 forms that embed an IPv4 address (mapped, compatible,
/// translated, NAT64 64:ff9b::/96, 6to4 2002::/16) are judged by that address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    const NOT_PUBLIC: &[([u8; 4], u32)] = &[
        ([0, 0, 0, 0], 8),       // "this network", unspecified
        ([10, 0, 0, 0], 8),      // private
        ([100, 64, 0, 0], 10),   // shared address space (CGNAT)
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local (cloud metadata)
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
        ([192, 88, 99, 0], 24),  // deprecated 6to4 relay anycast
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
        ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, and 255.255.255.255 broadcast
    ];
    !NOT_PUBLIC
        .iter()
        .any(|(net, prefix)| in_v4(ip, *net, *prefix))
}

/// The IPv4 address an IPv6 address stands for, when it embeds one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    let high96 = bits >> 32;
    match high96 {
        // IPv4-compatible ::a.b.c.d (:: and ::1 are handled before this).
        0 => Some(low32),
        // IPv4-mapped ::ffff:a.b.c.d.
        0xffff => Some(low32),
        // IPv4-translated ::ffff:0:a.b.c.d (SIIT).
        0xffff_0000 => Some(low32),
        // NAT64 well-known prefix 64:ff9b::/96.
        0x0064_ff9b_0000_0000_0000_0000 => Some(low32),
        // 6to4 2002:AABB:CCDD::/48 embeds AA.BB.CC.DD.
        _ if bits >> 112 == 0x2002 => Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32)),
        _ => None,
    }
}

fn in_v6(ip: Ipv6Addr, net: u128, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == net & mask
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if ip.is_unspecified() || ip.is_loopback() {
        return false;
    }
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    const NOT_PUBLIC: &[(u128, u32)] = &[
        (0x2001_0000 << 96, 23), // IETF special purpose (Teredo, benchmarking, ORCHID)
        (0x2001_0db8 << 96, 32), // documentation
        (0x3fff_0000 << 96, 20), // documentation (RFC 9637)
    ];
    // Global unicast is 2000::/3; everything else (unique-local fc00::/7,
    // link-local fe80::/10, site-local fec0::/10, multicast ff00::/8,
    // discard 100::/64, local-use NAT64 64:ff9b:1::/48, …) is not public.
    in_v6(ip, 0x2000 << 112, 3)
        && !NOT_PUBLIC
            .iter()
            .any(|(net, prefix)| in_v6(ip, *net, *prefix))
}

/// Why an outbound connection or request failed. Every message is fixed text:
/// none includes bytes received from the peer, the resolved address or an
/// operating-system error (closed and filtered ports look alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundError {
    /// The target (a URL or host) is malformed; says what is wrong with it.
    InvalidTarget(&'static str),
    /// The request itself is malformed (e.g. a header); says what is wrong.
    InvalidRequest(&'static str),
    /// Every address the target resolves to is refused by the policy; nothing
    /// was connected. The caller answers 422 `target_not_allowed`.
    NotAllowed,
    /// The host name does not resolve (or resolution timed out).
    Resolve,
    /// The connection was refused, the host unreachable, or the connect timed
    /// out: one message for all.
    Connect,
    /// The TLS handshake failed; says why in fixed words.
    Tls(&'static str),
    /// The peer does not speak the expected protocol, or broke the exchange.
    Protocol,
    /// The exchange did not finish within its time limit.
    Timeout,
}

impl OutboundError {
    /// A suggested machine-readable code for the JSON error.
    pub fn code(&self) -> &'static str {
        match self {
            OutboundError::InvalidTarget(_) => "invalid_target",
            OutboundError::InvalidRequest(_) => "invalid_request",
            OutboundError::NotAllowed => "target_not_allowed",
            OutboundError::Resolve => "target_unresolved",
            OutboundError::Connect => "target_unreachable",
            OutboundError::Tls(_) => "target_tls_failed",
            OutboundError::Protocol => "target_protocol_error",
            OutboundError::Timeout => "target_timeout",
        }
    }
}

impl fmt::Display for OutboundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutboundError::InvalidTarget(why) => write!(f, "invalid target: {why}"),
            OutboundError::InvalidRequest(why) => write!(f, "invalid request: {why}"),
            OutboundError::NotAllowed => f.write_str(
                "the target is not allowed: it is not a public address (an operator can \
                 allow such networks with --outbound-allow)",
            ),
            OutboundError::Resolve => f.write_str("the target's host name does not resolve"),
            OutboundError::Connect => f.write_str(
                "could not connect to the target (connection refused, unreachable or timed out)",
            ),
            OutboundError::Tls(why) => write!(f, "TLS handshake with the target failed: {why}"),
            OutboundError::Protocol => {
                f.write_str("the target's answer is not valid for the protocol")
            }
            OutboundError::Timeout => f.write_str("the target did not answer in time"),
        }
    }
}

impl std::error::Error for OutboundError {}

/// `host` without the brackets of an IPv6 literal (`[::1]` → `::1`).
fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The addresses `host` stands for, each checked by `policy`; resolves at most
/// once (a literal IP skips DNS). `NotAllowed` when none is permitted.
pub async fn resolve(
    policy: &OutboundPolicy,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, OutboundError> {
    let host = unbracket(host);
    if host.is_empty() {
        return Err(OutboundError::InvalidTarget("the host is empty"));
    }
    let all: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
                Ok(Ok(addrs)) => addrs.collect(),
                Ok(Err(_)) | Err(_) => return Err(OutboundError::Resolve),
            }
        }
    };
    if all.is_empty() {
        return Err(OutboundError::Resolve);
    }
    let permitted: Vec<SocketAddr> = all.into_iter().filter(|a| policy.permits(a.ip())).collect();
    if permitted.is_empty() {
        return Err(OutboundError::NotAllowed);
    }
    Ok(permitted)
}

/// Opens a TCP connection to `host:port` for a user: resolves once, drops the
/// addresses `policy` refuses (`NotAllowed`, without connecting anywhere, when
/// none is left), then tries the checked addresses in turn. `timeout` bounds
/// resolution and connecting together. Returns the stream and the address it
/// is connected to. Callers put TLS on top themselves.
pub async fn connect(
    policy: &OutboundPolicy,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), OutboundError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let addrs = resolve(policy, host, port, timeout).await?;
    let attempt = async {
        for addr in addrs {
            if let Ok(stream) = TcpStream::connect(addr).await {
                return Ok((stream, addr));
            }
        }
        Err(OutboundError::Connect)
    };
    match tokio::time::timeout_at(deadline, attempt).await {
        Ok(result) => result,
        Err(_) => Err(OutboundError::Connect),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::net::TcpListener;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    const SECOND: Duration = Duration::from_secs(5);

    #[test]
    fn classification_table() {
        let not_public = [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.1.2.3",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "2001:db8:ffff::1",
            "2001::1",      // Teredo
            "2001:2::1",    // benchmarking
            "3fff::1",      // documentation
            "100::1",       // discard-only
            "64:ff9b:1::1", // local-use NAT64
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::169.254.169.254",
            "::ffff:0:127.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",   // 6to4 of 127.0.0.1
            "2002:a9fe:a9fe::", // 6to4 of 169.254.169.254
            "2002:c0a8:101::1", // 6to4 of 192.168.1.1
        ];
        for a in not_public {
            assert!(!is_public(ip(a)), "{a} must not be public");
        }
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.255.255",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.1.1",
            "192.167.255.255",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "::8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1", // 6to4 of 8.8.8.8
        ];
        for a in public {
            assert!(is_public(ip(a)), "{a} must be public");
        }
    }

    #[test]
    fn policy_parse() {
        let p = OutboundPolicy::parse(" 127.0.0.0/8 ,10.1.2.3,, fd00::/8 ").expect("valid list");
        assert_eq!(p.allow.len(), 3);
        assert!(p.permits(ip("127.0.0.1")));
        assert!(p.permits(ip("10.1.2.3")));
        assert!(!p.permits(ip("10.1.2.4")));
        assert!(p.permits(ip("fd00::5")));
        assert!(!p.permits(ip("fe80::1")));
        assert!(p.permits(ip("8.8.8.8")), "public stays permitted");
        assert_eq!(
            OutboundPolicy::parse("").expect("empty"),
            OutboundPolicy::default()
        );
        assert_eq!(
            OutboundPolicy::parse(" , ").expect("blank"),
            OutboundPolicy::default()
        );
        let e = OutboundPolicy::parse("127.0.0.0/8, 10.0.0.0/33, nope").expect_err("bad entries");
        assert!(
            e.contains("\"10.0.0.0/33\"") && e.contains("\"nope\""),
            "{e}"
        );
        assert!(!e.contains("127.0.0.0/8"), "{e}");
    }

    #[test]
    fn mapped_addresses_checked_as_ipv4() {
        let p = OutboundPolicy::parse("127.0.0.0/8").expect("valid");
        assert!(p.permits(ip("::ffff:127.0.0.1")));
        assert!(!p.permits(ip("::ffff:10.0.0.1")));
        assert!(!OutboundPolicy::default().permits(ip("::ffff:127.0.0.1")));
        let v6 = OutboundPolicy::parse("::1").expect("valid");
        assert!(v6.permits(ip("::1")));
        assert!(!v6.permits(ip("127.0.0.1")));
    }

    /// A listener on 127.0.0.1 that counts the connections it accepts.
    async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                drop(s);
            }
        });
        (port, count)
    }

    #[tokio::test]
    async fn refused_targets_are_never_connected() {
        let (port, accepted) = counting_listener().await;
        let deny = OutboundPolicy::default();
        for host in [
            "127.0.0.1",
            "localhost",
            "2130706433",
            "0x7f000001",
            "[::ffff:127.0.0.1]",
            "::ffff:127.0.0.1",
            "127.1",
            "169.254.169.254",
        ] {
            let e = connect(&deny, host, port, SECOND).await.expect_err(host);
            assert_eq!(e, OutboundError::NotAllowed, "{host}");
            assert_eq!(e.code(), "target_not_allowed");
            assert!(!e.to_string().contains("127.0.0.1"), "{e}");
        }
        // Give a connection that slipped through time to be counted.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 0);

        let allow = OutboundPolicy::parse("127.0.0.0/8").expect("valid");
        for host in [
            "127.0.0.1",
            "2130706433",
            "0x7f000001",
            "[::ffff:127.0.0.1]",
        ] {
            let (_s, addr) = connect(&allow, host, port, SECOND).await.expect(host);
            assert_eq!(addr.port(), port);
            assert!(allow.permits(addr.ip()));
        }
        let (_s, addr) = connect(&allow, "localhost", port, SECOND)
            .await
            .expect("localhost");
        assert_eq!(
            addr.ip(),
            ip("127.0.0.1"),
            "::1 is not allowed, 127.0.0.1 is"
        );
        // The accept loop counts asynchronously; wait until it has caught up.
        for _ in 0..50 {
            if accepted.load(Ordering::SeqCst) == 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn closed_port_and_bad_names_echo_nothing() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        drop(l);
        let allow = OutboundPolicy::parse("127.0.0.0/8").expect("valid");
        let e = connect(&allow, "127.0.0.1", port, SECOND)
            .await
            .expect_err("closed port");
        assert_eq!(e, OutboundError::Connect);
        let text = e.to_string();
        for leak in [
            "os error",
            "Connection refused",
            &port.to_string(),
            "127.0.0.1",
        ] {
            assert!(!text.contains(leak), "{text:?} contains {leak:?}");
        }
        let e = connect(&allow, "no-such-host.invalid", 80, SECOND)
            .await
            .expect_err("unresolvable");
        assert_eq!(e, OutboundError::Resolve);
        assert!(!e.to_string().contains("no-such-host"));
        let e = connect(&allow, "", 80, SECOND).await.expect_err("empty");
        assert!(matches!(e, OutboundError::InvalidTarget(_)), "{e:?}");
    }
}
