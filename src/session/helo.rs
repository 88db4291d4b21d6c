//! HELO, EHLO and XFORWARD: who the client says it is, and whom a trusted forwarder names.

use super::{Flow, Session};
use crate::smtp::extensions::Offer;
use crate::smtp::reply::{self, Reply};
use std::net::SocketAddr;

impl Session {
    pub(super) async fn helo(&mut self, name: String, esmtp: bool) -> Flow {
        // RFC 5321 4.1.4: a new EHLO ends the transaction, on both sides. The upstream session
        // stays; the next MAIL announces the new HELO name with XCLIENT first.
        self.end_transaction(true).await;
        self.tx.envelope.helo = Some(name.clone());
        self.tx.envelope.esmtp = esmtp;
        self.state.on_helo();
        self.offer = Offer::new(
            self.shared.limits.max_message_size,
            self.shared.upstream.capabilities().as_ref(),
            self.shared.tls.is_some() && !self.state.is_tls(),
        );
        self.offer.xforward = self.trusted_forwarder();
        self.tx.helo().await;
        let r = if esmtp {
            self.offer.ehlo_reply(&self.shared.hostname, &name)
        } else {
            Reply {
                code: 250,
                enhanced: None,
                lines: vec![self.shared.hostname.clone().into()],
            }
        };
        self.conn.queue(&r);
        Flow::Continue
    }

    /// True when the TCP peer (not a forwarded identity) is a trusted forwarder.
    pub(super) fn trusted_forwarder(&self) -> bool {
        self.shared
            .xforward_hosts
            .match_ip(self.peer.ip())
            .is_some()
    }

    /// XFORWARD from a trusted forwarder (Postfix's before-queue proxy sends it after EHLO):
    /// the client it names becomes the client of every check, of the Received field and of
    /// what moat announces upstream. NAME is not taken: moat checks reverse DNS itself.
    pub(super) fn xforward(&mut self, attrs: Vec<(String, String)>) -> Flow {
        if !self.trusted_forwarder() {
            tracing::info!(session = self.id, client = %self.tx.envelope.client, "XFORWARD from a host not in server.xforward_hosts; refused");
            return self.client_error(reply::FORWARDING_COMMAND_REFUSED.reply());
        }
        let unavailable = |v: &str| {
            v.eq_ignore_ascii_case("[UNAVAILABLE]") || v.eq_ignore_ascii_case("[TEMPUNAVAIL]")
        };
        let (mut addr, mut port) = (None, None);
        for (name, value) in &attrs {
            if unavailable(value) {
                continue;
            }
            match name.as_str() {
                "ADDR" => {
                    let v = value
                        .strip_prefix("IPV6:")
                        .or_else(|| value.strip_prefix("ipv6:"))
                        .unwrap_or(value);
                    match v.parse::<std::net::IpAddr>() {
                        Ok(ip) => addr = Some(ip),
                        Err(_) => return self.client_error(reply::XFORWARD_BAD.reply()),
                    }
                }
                "PORT" => match value.parse::<u16>() {
                    Ok(p) => port = Some(p),
                    Err(_) => return self.client_error(reply::XFORWARD_BAD.reply()),
                },
                "HELO" => self.tx.envelope.helo = Some(value.clone()),
                "PROTO" => self.tx.envelope.esmtp = value.eq_ignore_ascii_case("ESMTP"),
                // NAME: verified again by moat's own reverse DNS check; IDENT, SOURCE and
                // DOMAIN only matter to the forwarder's logs.
                _ => {}
            }
        }
        if addr.is_some() || port.is_some() {
            let ip = addr.unwrap_or(self.tx.envelope.client.ip());
            let port = port.unwrap_or(if addr.is_some() {
                0
            } else {
                self.tx.envelope.client.port()
            });
            self.tx.envelope.client = SocketAddr::new(ip, port);
        }
        tracing::debug!(session = self.id, client = %self.tx.envelope.client, helo = self.tx.envelope.helo.as_deref().unwrap_or(""), "XFORWARD");
        self.identity_changed = true;
        self.conn.queue(&reply::XFORWARD_OK.reply());
        Flow::Continue
    }

    /// Runs the connect and HELO checks again for the client XFORWARD named, and drops an
    /// upstream session that was announced with the forwarder's identity.
    pub(super) async fn refresh_identity(&mut self) {
        self.identity_changed = false;
        self.drop_upstream().await;
        self.tx.restart().await;
    }
}
