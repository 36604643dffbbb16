//! The jwksUri a key can be registered by: where keyward will later fetch the key from.

use std::net::IpAddr;

use url::{Host, Url};

use crate::net::is_public_ip;
use crate::DomainError;

/// Hosts the operator allowed over plain http and on internal addresses (development and
/// tests only). Compared case-insensitively; IPv6 hosts without brackets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InsecureHosts(Vec<String>);

impl InsecureHosts {
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(hosts: I) -> Self {
        Self(
            hosts
                .into_iter()
                .map(|h| normalize_host(h.as_ref()))
                .filter(|h| !h.is_empty())
                .collect(),
        )
    }

    pub fn allows(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.0.contains(&host)
    }

    pub fn hosts(&self) -> &[String] {
        &self.0
    }
}

fn normalize_host(host: &str) -> String {
    host.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// A validated jwksUri.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksUri(Url);

impl JwksUri {
    pub const MAX_LEN: usize = 2048;

    pub fn parse(raw: &str, insecure: &InsecureHosts) -> Result<Self, DomainError> {
        let refuse = |why: &str| DomainError::InvalidJwksUri(format!("the jwksUri {why}"));
        if raw.len() > Self::MAX_LEN {
            return Err(refuse(&format!(
                "is {} characters long; use at most {}",
                raw.len(),
                Self::MAX_LEN
            )));
        }
        let url = Url::parse(raw).map_err(|_| {
            refuse("is not an absolute URL; use the form https://example.com/.well-known/jwks.json")
        })?;
        let Some(host) = url.host() else {
            return Err(refuse(
                "has no host; use the form https://example.com/.well-known/jwks.json",
            ));
        };
        let host_text = match &host {
            Host::Domain(d) => (*d).to_owned(),
            Host::Ipv4(ip) => ip.to_string(),
            Host::Ipv6(ip) => ip.to_string(),
        };
        let allowed = insecure.allows(&host_text);
        match url.scheme() {
            "https" => {}
            "http" if allowed => {}
            _ => return Err(refuse("must use https")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse(
                "must not carry a user name or password; put no credentials in the URL",
            ));
        }
        if url.fragment().is_some() {
            return Err(refuse("must not have a fragment ('#...'); remove it"));
        }
        if !allowed {
            let ip = match host {
                Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
                Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
                Host::Domain(domain) => {
                    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
                    if domain == "localhost" || domain.ends_with(".localhost") {
                        return Err(refuse(
                            "points at this machine (localhost); use a public https host",
                        ));
                    }
                    None
                }
            };
            if ip.is_some_and(|ip| !is_public_ip(ip)) {
                return Err(refuse(
                    "points at a loopback, private, link-local, multicast or reserved address; use a public https host",
                ));
            }
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &Url {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str) -> Result<JwksUri, &'static str> {
        JwksUri::parse(raw, &InsecureHosts::default()).map_err(|e| e.code())
    }

    #[test]
    fn accepts_public_https() {
        assert!(check("https://example.com/.well-known/jwks.json").is_ok());
        assert!(check("https://8.8.8.8/jwks").is_ok());
        assert!(check("https://example.com:8443/jwks?x=1").is_ok());
    }

    #[test]
    fn refuses_what_the_contract_refuses() {
        for bad in [
            "http://example.com/jwks",
            "ftp://example.com/jwks",
            "/relative/jwks.json",
            "example.com/jwks",
            "https://user:pw@example.com/jwks",
            "https://user@example.com/jwks",
            "https://example.com/jwks#frag",
            "https://example.com/jwks#",
            "https://127.0.0.1/jwks",
            "https://0x7f.1/jwks",
            "https://2130706433/jwks",
            "https://10.0.0.1/jwks",
            "https://192.168.0.10/jwks",
            "https://172.20.1.1/jwks",
            "https://169.254.169.254/latest",
            "https://0.0.0.0/jwks",
            "https://[::1]/jwks",
            "https://[::ffff:127.0.0.1]/jwks",
            "https://[fe80::1]/jwks",
            "https://[fd00::1]/jwks",
            "https://224.0.0.1/jwks",
            "https://240.0.0.1/jwks",
            "https://localhost/jwks",
            "https://a.localhost/jwks",
        ] {
            assert_eq!(check(bad).map(|_| ()), Err("INVALID_JWKS_URI"), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(2048));
        assert_eq!(check(&long).map(|_| ()), Err("INVALID_JWKS_URI"));
    }

    #[test]
    fn operator_may_allow_a_host_over_http() {
        let allowed = InsecureHosts::new(["127.0.0.1", "jwks.test", "[::1]"]);
        assert!(JwksUri::parse("http://127.0.0.1:8080/jwks", &allowed).is_ok());
        assert!(JwksUri::parse("http://JWKS.test/jwks", &allowed).is_ok());
        assert!(JwksUri::parse("http://[::1]:9/jwks", &allowed).is_ok());
        // Allowing a host does not allow credentials, fragments or other hosts.
        assert!(JwksUri::parse("http://u@jwks.test/jwks", &allowed).is_err());
        assert!(JwksUri::parse("http://jwks.test/jwks#x", &allowed).is_err());
        assert!(JwksUri::parse("http://10.0.0.1/jwks", &allowed).is_err());
    }
}
