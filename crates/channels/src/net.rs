//! Where TELENET's own HTTP requests may go: the one policy for every
//! request made to an address someone else chose — a channel's
//! `outbound_url` (dispatch), a file a provider announced (media).
//!
//! Such a request could otherwise be pointed at TELENET's own internals or
//! at a cloud's metadata service (`http://169.254.169.254/`), and its answer
//! reported back. So only **public** addresses are reached ([`is_public`]),
//! plus the non-public ones an operator lists on purpose (an [`AllowList`]
//! of networks and host names, for receivers on premises):
//!
//! - a host written as an IP address is checked before anything is sent
//!   ([`Egress::check_url`]);
//! - a name is resolved by [`Egress::resolver`], which hands the HTTP
//!   client only addresses the policy permits, so the connection goes to an
//!   address that was checked and a name cannot switch to an internal one
//!   between a check and the connection (every address of the name counts;
//!   a name with none permitted fails to resolve with [`Refused::NotPublic`]);
//! - redirects, where a client follows any, are checked the same way
//!   ([`Egress::redirect_policy`]).
//!
//! A proxy set in the environment (`HTTPS_PROXY`) resolves names itself:
//! then only literal addresses are checked here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Whether `ip` is an ordinary address on the public internet: not
/// loopback, private, link-local (cloud metadata), shared (CGNAT),
/// documentation, benchmarking, multicast, reserved or unspecified; IPv6
/// addresses that embed an IPv4 address (mapped, NAT64) are judged by it.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return is_public_v4(Ipv4Addr::new(a, b, c, d));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || s[..4] == [0x100, 0, 0, 0]) // discard-only
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_unspecified()
        || ip.is_multicast()
        || a == 0 // "this network"
        || (a == 100 && (b & 0xc0) == 64) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // protocol assignments
        || (a == 198 && (b & 0xfe) == 18) // benchmarking
        || a >= 240) // reserved
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`) as the IPv4 address,
/// so allow-list networks match it either way.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Non-public destinations that are allowed all the same: networks
/// (`10.20.0.0/16`, `fd00::/8`), single addresses (`192.168.1.20`) and host
/// names (`receiver.corp.internal`, which may then resolve to any address).
/// Empty: public addresses only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    networks: Vec<IpNet>,
    /// Lowercase, without a trailing dot.
    hosts: Vec<String>,
    /// Every address, public or not.
    everything: bool,
}

/// The allow-list entries that make loopback receivers reachable (what the
/// dev server and tests use: everything there runs on this machine).
pub const LOOPBACK: [&str; 2] = ["127.0.0.0/8", "::1/128"];

impl AllowList {
    /// Nothing beyond public addresses.
    pub fn none() -> Self {
        Self::default()
    }

    /// Every address, public or not (a switch like media's
    /// `allow_private_networks`).
    pub fn everything() -> Self {
        Self {
            everything: true,
            ..Self::default()
        }
    }

    /// The list a setting gives; the error names the entry that is neither
    /// a network, an address nor a host name.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut list = Self::default();
        for entry in entries {
            let text = entry.as_ref().trim();
            if let Ok(net) = text.parse::<IpNet>() {
                list.networks.push(net.trunc());
            } else if let Ok(ip) = text.parse::<IpAddr>() {
                list.networks.push(IpNet::from(canonical(ip)));
            } else if is_host_name(text) {
                list.hosts.push(host_key(text));
            } else {
                return Err(format!(
                    "{text:?} is not a network (10.0.0.0/8), an address or a host name"
                ));
            }
        }
        Ok(list)
    }

    /// Whether nothing beyond public addresses is allowed.
    pub fn is_empty(&self) -> bool {
        !self.everything && self.networks.is_empty() && self.hosts.is_empty()
    }

    /// Whether `ip` is allowed although it may not be public.
    pub fn allows_address(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.everything || self.networks.iter().any(|net| net.contains(&ip))
    }

    /// Whether the name `host` may resolve to any address.
    pub fn allows_host(&self, host: &str) -> bool {
        self.everything || {
            let key = host_key(host);
            self.hosts.contains(&key)
        }
    }
}

fn host_key(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// A DNS name: dot-separated labels of letters, digits, `-` and `_`.
fn is_host_name(text: &str) -> bool {
    let name = text.trim_end_matches('.');
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Why a destination is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The URL cannot be read, or has no host.
    #[error("{0}")]
    Invalid(String),
    /// Not http or https.
    #[error("the scheme {0:?} is not http or https")]
    Scheme(String),
    /// An address (or every address a name resolves to) is not public, and
    /// the allow-list (`setting`) does not name it.
    #[error("{target} is not a public address and is not allowed by {setting}")]
    NotPublic {
        target: String,
        setting: &'static str,
    },
    /// A redirect the client would not follow.
    #[error("{0}")]
    Redirect(String),
}

/// The policy of one HTTP client: public addresses, and the non-public ones
/// its [`AllowList`] names. Clones share the list.
#[derive(Debug, Clone)]
pub struct Egress {
    allow: Arc<AllowList>,
    /// The configuration key of the allow-list, named in refusals so an
    /// operator knows what to change.
    setting: &'static str,
}

impl Egress {
    /// The policy allowing what `allow` names beyond public addresses;
    /// `setting` is where the list is configured (`dispatch.private_receivers`).
    pub fn new(allow: AllowList, setting: &'static str) -> Self {
        Self {
            allow: Arc::new(allow),
            setting,
        }
    }

    /// The allow-list.
    pub fn allow_list(&self) -> &AllowList {
        &self.allow
    }

    /// Whether a connection to `ip` is permitted.
    pub fn permits(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.allow.allows_address(ip)
    }

    fn not_public(&self, target: impl Into<String>) -> Refused {
        Refused::NotPublic {
            target: target.into(),
            setting: self.setting,
        }
    }

    /// Parse `text` as an absolute http(s) URL with a host and
    /// [`check_url`](Self::check_url) it.
    pub fn check(&self, text: &str) -> Result<url::Url, Refused> {
        let url = url::Url::parse(text.trim())
            .map_err(|e| Refused::Invalid(format!("not an absolute URL: {e}")))?;
        self.check_url(&url)?;
        Ok(url)
    }

    /// Whether `url` may be requested: http or https, with a host, and a
    /// host written as an address permitted (names are checked when they are
    /// resolved, by [`resolver`](Self::resolver)).
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused::Scheme(url.scheme().to_owned()));
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(Refused::Invalid("the URL has no host".into())),
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(self.not_public(ip.to_string()))
        }
    }

    /// The resolver a client of this policy uses (`dns_resolver`): every
    /// address a name resolves to is checked, and only permitted ones are
    /// connected to.
    pub fn resolver(&self) -> Arc<PermittedOnly> {
        Arc::new(PermittedOnly(self.clone()))
    }

    /// `builder` with this policy's resolver (unless everything is allowed).
    pub fn apply(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        if self.allow.everything {
            builder
        } else {
            builder.dns_resolver(self.resolver())
        }
    }

    /// Follow at most `max_redirects` redirects, each to an http(s) URL this
    /// policy permits (0 refuses every redirect as an error; a client that
    /// must see redirects as answers uses `Policy::none()`).
    pub fn redirect_policy(&self, max_redirects: usize) -> reqwest::redirect::Policy {
        let egress = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max_redirects {
                return attempt.error(Refused::Redirect(format!(
                    "more than {max_redirects} redirects"
                )));
            }
            match egress.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(why) => attempt.error(Refused::Redirect(format!("redirect refused: {why}"))),
            }
        })
    }
}

/// The resolver of an [`Egress`]: names resolve to the addresses it
/// permits, all of them when the name itself is allowed.
#[derive(Debug, Clone)]
pub struct PermittedOnly(Egress);

impl reqwest::dns::Resolve for PermittedOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let egress = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = if egress.allow.allows_host(&host) {
                resolved
            } else {
                resolved
                    .into_iter()
                    .filter(|a| egress.permits(a.ip()))
                    .collect()
            };
            if permitted.is_empty() {
                return Err(
                    Box::new(egress.not_public(host)) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The policy's refusal in the chain of `error` (a failed request), if that
/// is why it failed.
pub fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut current = Some(error);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<Refused>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip(private)), "{private} counted as public");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip(public)), "{public} counted as private");
        }
    }

    fn refused(egress: &Egress, url: &str) -> Refused {
        egress.check(url).expect_err(url)
    }

    #[test]
    fn literal_addresses_are_checked_names_are_left_to_the_resolver() {
        let strict = Egress::new(AllowList::none(), "x.private_receivers");
        for url in [
            "http://127.0.0.1/",
            "http://127.0.0.1:8080/in",
            "http://[::1]/",
            "http://10.0.0.7/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:169.254.169.254]/",
            "http://0.0.0.0:9/",
        ] {
            let why = refused(&strict, url);
            assert!(matches!(why, Refused::NotPublic { .. }), "{url}: {why:?}");
            assert!(
                why.to_string().contains("x.private_receivers"),
                "names the setting: {why}"
            );
        }
        assert!(matches!(
            refused(&strict, "ftp://8.8.8.8/"),
            Refused::Scheme(_)
        ));
        assert!(matches!(refused(&strict, "not a url"), Refused::Invalid(_)));
        assert!(strict.check("https://8.8.8.8/in").is_ok());
        assert!(strict.check("https://receiver.example/in").is_ok());
    }

    #[test]
    fn the_allow_list_opens_networks_addresses_and_names() {
        let list = AllowList::parse(&[
            "10.20.0.0/16",
            "192.168.1.20",
            "fd00::/8",
            "Receiver.Corp.Internal.",
        ])
        .expect("valid");
        let egress = Egress::new(list, "x");
        assert!(egress.check("http://10.20.3.4:8080/in").is_ok());
        assert!(egress.check("http://[::ffff:10.20.3.4]/in").is_ok());
        assert!(egress.check("http://192.168.1.20/").is_ok());
        assert!(egress.check("http://[fd12::1]/").is_ok());
        assert!(egress.check("http://10.21.0.1/").is_err());
        assert!(egress.check("http://192.168.1.21/").is_err());
        assert!(egress.check("http://127.0.0.1/").is_err());
        assert!(egress.allow_list().allows_host("receiver.corp.internal"));
        assert!(!egress.allow_list().allows_host("other.corp.internal"));

        let loopback = AllowList::parse(&LOOPBACK).expect("loopback");
        assert!(loopback.allows_address(ip("127.0.0.2")));
        assert!(loopback.allows_address(ip("::1")));
        assert!(!loopback.allows_address(ip("10.0.0.1")));
        assert!(AllowList::none().is_empty() && !loopback.is_empty());
        assert!(AllowList::everything().allows_address(ip("169.254.169.254")));

        for bad in ["10.0.0.0/33", "http://x", "a b", "", "*.corp"] {
            let err = AllowList::parse(&[bad]).expect_err(bad);
            assert!(err.contains("is not a network"), "{err}");
        }
    }

    #[tokio::test]
    async fn names_resolve_to_permitted_addresses_only() {
        use reqwest::dns::Resolve as _;
        let name = |n: &str| n.parse::<reqwest::dns::Name>().expect("name");
        let strict = Egress::new(AllowList::none(), "x.private_receivers");
        let err = match strict.resolver().resolve(name("localhost")).await {
            Ok(_) => panic!("localhost resolved"),
            Err(e) => e,
        };
        let err: &(dyn std::error::Error + 'static) = &*err;
        let refused = refusal_in(err).expect("a refusal");
        assert_eq!(
            refused.to_string(),
            "localhost is not a public address and is not allowed by x.private_receivers"
        );
        for allowed in [
            AllowList::parse(&LOOPBACK).expect("loopback"),
            AllowList::parse(&["LOCALHOST"]).expect("by name"),
        ] {
            let addrs: Vec<_> = Egress::new(allowed, "x")
                .resolver()
                .resolve(name("localhost"))
                .await
                .expect("allowed")
                .collect();
            assert!(!addrs.is_empty());
            assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        }
    }
}
