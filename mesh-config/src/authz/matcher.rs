//! The small matchers AuthorizationPolicy fields are made of: who the peer is (principal,
//! namespace, service account, all read from its verified identity), Istio's `*` patterns for
//! principals and namespaces, and port numbers.

/// The source of a connection as policies name it. Plaintext has no identity: every
/// principal, namespace and service-account value fails to match it, so a positive field
/// (`principals: [...]`) never admits it and a negative one (`notPrincipals: [...]`) never
/// excludes it — which is why `DENY` with `notPrincipals: ["*"]` is Istio's way to refuse
/// plaintext.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Peer<'a> {
    /// `td/ns/<namespace>/sa/<service-account>`.
    pub principal: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub service_account: Option<&'a str>,
}

impl<'a> Peer<'a> {
    /// Reads Istio's principal form (`td/ns/x/sa/y`). A leading `spiffe://` is tolerated, so
    /// a caller handing over the URI by mistake does not silently lose every match. A
    /// principal of another shape keeps its string (principal patterns still apply) but has
    /// no namespace or service account.
    pub fn from_principal(principal: Option<&'a str>) -> Peer<'a> {
        let Some(p) = principal.filter(|p| !p.is_empty()) else {
            return Peer::default();
        };
        let p = p.strip_prefix("spiffe://").unwrap_or(p);
        let mut parts = p.split('/');
        let (ns, sa) = match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None)
                if !td.is_empty() && !ns.is_empty() && !sa.is_empty() =>
            {
                (Some(ns), Some(sa))
            }
            _ => (None, None),
        };
        Peer {
            principal: Some(p),
            namespace: ns,
            service_account: sa,
        }
    }

    /// A `serviceAccounts` value: `namespace/name`, or `name` in the policy's namespace.
    pub fn is_service_account(&self, value: &str, policy_namespace: &str) -> bool {
        let (ns, sa) = value.split_once('/').unwrap_or((policy_namespace, value));
        self.namespace == Some(ns) && self.service_account == Some(sa)
    }
}

/// Istio's string pattern for principals and namespaces: `*` alone means "present" (any
/// authenticated peer), a leading `*` a suffix, a trailing `*` a prefix, anything else is
/// exact. An absent value matches no pattern.
pub(crate) fn pattern_matches(pattern: &str, value: Option<&str>) -> bool {
    let Some(value) = value else {
        return false;
    };
    if pattern == "*" {
        !value.is_empty()
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        value.ends_with(suffix)
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        value.starts_with(prefix)
    } else {
        pattern == value
    }
}

/// A port as policies write it (a string, `"8080"`): 1 to 65535, else `None`.
pub fn parse_port(s: &str) -> Option<u16> {
    s.trim().parse::<u16>().ok().filter(|p| *p != 0)
}

/// Whether a port as written is `port`; an unparsable one is not.
pub(crate) fn port_is(value: &str, port: u16) -> bool {
    parse_port(value) == Some(port)
}

/// A positive list and its negation, as every policy field pair is combined: the value must
/// match one of `positive` (when there is any) and none of `negative`.
pub(crate) fn field<T>(
    positive: &[T],
    negative: &[T],
    mut matches: impl FnMut(&T) -> bool,
) -> bool {
    (positive.is_empty() || positive.iter().any(&mut matches)) && !negative.iter().any(matches)
}
