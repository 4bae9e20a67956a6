//! Which other services a service calls, as it declares them.
//!
//! Every service crate declares its calls next to its `NAME`:
//!
//! ```
//! use telenet_runtime::Call;
//!
//! pub const NAME: &str = "dispatch";
//! pub const CALLS: &[Call] = &[Call::grpc("ingress"), Call::grpc("media")];
//! ```
//!
//! The process hands the declaration to the service's context
//! ([`ServiceContext::with_calls`](crate::ServiceContext::with_calls)), which
//! refuses a client of, or the address of, any service not declared there,
//! so the declaration cannot leave a call out. The same declarations are the
//! chart's call graph (`charts/telenet/files/calls.yaml`, written by
//! `deploy/tools/callgraph.py --write`), from which the NetworkPolicies
//! allow exactly these calls.

use std::fmt;

/// How a service reaches another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CallKind {
    /// Its gRPC API, through [`ServiceContext::client`](crate::ServiceContext::client):
    /// a connection to port 50051 of its pods.
    Grpc,
    /// Its HTTP side (ingress's webhooks, the gateway), at the address
    /// [`ServiceContext::http_addr_of`](crate::ServiceContext::http_addr_of)
    /// gives: a connection to its HTTP port.
    Http,
    /// Only the address of its HTTP side, to write links that others
    /// follow (media's download links pointing at the gateway of the same
    /// process): no connection, so no network edge.
    Link,
}

impl CallKind {
    /// Its name in the call graph (`grpc`, `http`, `link`).
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Grpc => "grpc",
            CallKind::Http => "http",
            CallKind::Link => "link",
        }
    }

    /// The words of an error message.
    fn describe(self) -> &'static str {
        match self {
            CallKind::Grpc => "over gRPC",
            CallKind::Http => "over HTTP",
            CallKind::Link => "by links to its HTTP side",
        }
    }
}

/// One service a service calls, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Call {
    /// The service called (`ingress`, `media`, …).
    pub service: &'static str,
    /// How.
    pub kind: CallKind,
}

impl Call {
    /// A call of `service`'s gRPC API.
    pub const fn grpc(service: &'static str) -> Self {
        Self {
            service,
            kind: CallKind::Grpc,
        }
    }

    /// A call of `service`'s HTTP side.
    pub const fn http(service: &'static str) -> Self {
        Self {
            service,
            kind: CallKind::Http,
        }
    }

    /// Links to `service`'s HTTP side, which the service itself never
    /// connects to.
    pub const fn link(service: &'static str) -> Self {
        Self {
            service,
            kind: CallKind::Link,
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.service)
    }
}

/// Ok when `calls` (the declaration of service `caller`) holds a call of
/// `service` of one of `kinds`; else the error saying what to declare.
pub(crate) fn check(
    caller: &str,
    calls: &[Call],
    service: &str,
    kinds: &[CallKind],
) -> anyhow::Result<()> {
    if calls
        .iter()
        .any(|c| c.service == service && kinds.contains(&c.kind))
    {
        return Ok(());
    }
    let declared = if calls.is_empty() {
        "none".to_owned()
    } else {
        calls
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let kind = kinds[0];
    Err(anyhow::anyhow!(
        "{caller} may not reach the {service} service {}: its CALLS do not declare it \
         (declared: {declared}); add Call::{}(\"{service}\") to CALLS next to NAME in the \
         {caller} crate and run deploy/tools/callgraph.py --write, so the chart's \
         NetworkPolicies allow it",
        kind.describe(),
        kind.as_str(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_call_of_the_right_kind_passes() {
        let calls = [Call::grpc("ingress"), Call::link("gateway")];
        assert!(check("media", &calls, "ingress", &[CallKind::Grpc]).is_ok());
        assert!(
            check(
                "media",
                &calls,
                "gateway",
                &[CallKind::Http, CallKind::Link]
            )
            .is_ok()
        );
    }

    #[test]
    fn the_refusal_says_what_to_declare() {
        let calls = [Call::grpc("ingress")];
        let error = check("dispatch", &calls, "media", &[CallKind::Grpc])
            .expect_err("media is not declared")
            .to_string();
        assert!(
            error.contains("dispatch may not reach the media service over gRPC"),
            "{error}"
        );
        assert!(error.contains("declared: grpc ingress"), "{error}");
        assert!(error.contains(r#"Call::grpc("media")"#), "{error}");

        let error = check("reporting", &[], "ingress", &[CallKind::Grpc])
            .expect_err("nothing is declared")
            .to_string();
        assert!(error.contains("declared: none"), "{error}");
    }

    #[test]
    fn another_kind_of_call_of_the_same_service_does_not_pass() {
        // A link gives no client; a gRPC call gives no HTTP address.
        let calls = [Call::link("gateway"), Call::grpc("ingress")];
        assert!(check("media", &calls, "gateway", &[CallKind::Grpc]).is_err());
        assert!(
            check(
                "media",
                &calls,
                "ingress",
                &[CallKind::Http, CallKind::Link]
            )
            .is_err()
        );
    }
}
