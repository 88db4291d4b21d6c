//! The decision: score card + thresholds + forced actions -> action and reply. Pure: no I/O, no
//! clock, unit-tested on values.

pub mod card;
pub(crate) mod headers;

use crate::config::VerdictConfig;
use crate::smtp::reply::{self, Reply};
use card::{Action, ScoreCard, Stage};

/// What to do with the transaction and what to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The action.
    pub action: Action,
    /// The reply for tempfail/reject (accept and add_header relay the upstream's reply).
    pub reply: Option<Reply>,
    /// The total score.
    pub score: f64,
    /// The symbol that forced the action, if one did.
    pub forced_by: Option<String>,
}

impl Verdict {
    /// True for tempfail and reject.
    pub fn refuses(&self) -> bool {
        matches!(self.action, Action::Tempfail | Action::Reject)
    }

    /// True when the message counts as spam for X-Spam-Flag/X-Spam-Status: flagged or refused
    /// for content, or scored at the flag threshold. A deferral for a DNS failure is not spam.
    pub fn is_spam(&self, config: &VerdictConfig) -> bool {
        matches!(self.action, Action::AddHeader | Action::Reject) || self.score >= config.add_header
    }
}

fn fill(text: &str, score: f64) -> String {
    text.replace("{score}", &format!("{score:.1}"))
}

/// Decides at `stage`. Before DATA the score only refuses once it reaches the reject threshold
/// (flagging and deferring by score need the message), while forced actions apply at once; at
/// connect a refusal is a 554 (RFC 5321 3.1), later a 550.
pub fn decide(card: &ScoreCard, config: &VerdictConfig, stage: Stage) -> Verdict {
    let score = card.total();
    // An admin's list entry decides alone: deny over allow, both over everything else.
    let absolute = |a: Action| {
        card.symbols.iter().find(|s| {
            s.forced
                .as_ref()
                .is_some_and(|f| f.absolute && f.action == a)
        })
    };
    if let Some(s) = absolute(Action::Reject).or_else(|| absolute(Action::Accept)) {
        let f = s.forced.as_ref();
        return Verdict {
            action: f.map(|f| f.action).unwrap_or(Action::Accept),
            reply: f.and_then(|f| f.reply.clone()),
            score,
            forced_by: Some(s.name.clone()),
        };
    }
    let by_score = if score >= config.reject {
        Action::Reject
    } else if stage != Stage::Data {
        Action::Accept
    } else if config.tempfail.is_some_and(|t| score >= t) {
        Action::Tempfail
    } else if score >= config.add_header {
        Action::AddHeader
    } else {
        Action::Accept
    };
    // The strongest forced action; among equals the first, which came from the earliest stage.
    let forced = card
        .symbols
        .iter()
        .filter_map(|s| s.forced.as_ref().map(|f| (f, s)))
        .fold(
            None,
            |best: Option<(&card::Forced, &card::Symbol)>, cur| match best {
                Some(b) if b.0.action >= cur.0.action => Some(b),
                _ => Some(cur),
            },
        );
    let (mut action, mut reply, forced_by) = match forced {
        Some((f, s)) if f.action > by_score => (f.action, f.reply.clone(), Some(s.name.clone())),
        _ => (by_score, None, None),
    };
    if stage != Stage::Data && action == Action::AddHeader {
        action = Action::Accept;
    }
    if reply.is_none() {
        reply = match action {
            Action::Reject => {
                let (code, enhanced) = if stage == Stage::Connect {
                    reply::SPAM_REJECT_CONNECT
                } else {
                    reply::SPAM_REJECT
                };
                Some(Reply::new(code, enhanced, fill(&config.reject_text, score)))
            }
            Action::Tempfail => {
                let (code, enhanced) = reply::SPAM_TEMPFAIL;
                Some(Reply::new(
                    code,
                    enhanced,
                    fill(&config.tempfail_text, score),
                ))
            }
            _ => None,
        };
    }
    Verdict {
        action,
        reply,
        score,
        forced_by,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::card::Symbol;

    fn sym(name: &str, score: f64) -> Symbol {
        Symbol {
            name: name.into(),
            score,
            description: "".into(),
            stage: Stage::Data,
            detail: None,
            forced: None,
        }
    }

    #[test]
    fn thresholds_pick_the_action() {
        let cfg = VerdictConfig {
            tempfail: Some(10.0),
            ..Default::default()
        };
        let card = |s: f64| ScoreCard {
            symbols: vec![sym("X", s)],
        };
        assert_eq!(decide(&card(1.0), &cfg, Stage::Data).action, Action::Accept);
        assert_eq!(
            decide(&card(6.0), &cfg, Stage::Data).action,
            Action::AddHeader
        );
        assert_eq!(decide(&card(6.0), &cfg, Stage::Mail).action, Action::Accept);
        assert_eq!(
            decide(&card(12.0), &cfg, Stage::Rcpt).action,
            Action::Accept
        );
        let t = decide(&card(12.0), &cfg, Stage::Data);
        assert_eq!(
            t.reply.unwrap().to_wire(),
            "451 4.7.1 Message deferred, try again later (score 12.0)\r\n"
        );
        let r = decide(&card(15.2), &cfg, Stage::Data);
        assert_eq!(
            r.reply.unwrap().to_wire(),
            "550 5.7.1 Message rejected as spam (score 15.2)\r\n"
        );
        let c = decide(&card(20.0), &cfg, Stage::Connect);
        assert_eq!(c.reply.unwrap().code, 554);
    }

    #[test]
    fn forced_actions_win_over_a_milder_score() {
        let cfg = VerdictConfig::default();
        let allowed = sym("ALLOWLIST_IP", 0.0).absolute(Action::Accept, None);
        let dmarc = sym("DMARC_POLICY_REJECT", 1.0).forcing(Action::Reject, None);
        let v = decide(
            &ScoreCard {
                symbols: vec![dmarc, allowed.clone(), sym("BIG", 50.0)],
            },
            &cfg,
            Stage::Data,
        );
        assert_eq!(
            v.action,
            Action::Accept,
            "an allow entry beats scores and forced actions"
        );
        let denied =
            sym("DENYLIST_SENDER", 0.0).absolute(Action::Reject, Some(reply::DENIED.reply()));
        let v = decide(
            &ScoreCard {
                symbols: vec![allowed, denied],
            },
            &cfg,
            Stage::Data,
        );
        assert_eq!(
            (v.action, v.reply.unwrap().code),
            (Action::Reject, 550),
            "deny beats allow"
        );
        let forced = sym("DMARC_POLICY_REJECT", 1.0).forcing(
            Action::Reject,
            Some(reply::DMARC_REJECT.with_detail("example.com")),
        );
        let tf = sym("DMARC_TEMPERROR", 0.0)
            .forcing(Action::Tempfail, Some(reply::AUTH_DNS_TEMPFAIL.reply()));
        let v = decide(
            &ScoreCard {
                symbols: vec![tf.clone(), forced],
            },
            &cfg,
            Stage::Data,
        );
        assert_eq!(v.action, Action::Reject);
        assert_eq!(v.forced_by.as_deref(), Some("DMARC_POLICY_REJECT"));
        assert_eq!(v.reply.unwrap().enhanced, Some(reply::Enhanced(5, 7, 1)));
        // A temperror defers but never rejects by itself.
        let v = decide(&ScoreCard { symbols: vec![tf] }, &cfg, Stage::Data);
        assert_eq!((v.action, v.reply.unwrap().code), (Action::Tempfail, 451));
        // A score-based reject outranks a forced tempfail.
        let v = decide(
            &ScoreCard {
                symbols: vec![
                    sym("BIG", 20.0),
                    sym("T", 0.0).forcing(Action::Tempfail, None),
                ],
            },
            &cfg,
            Stage::Data,
        );
        assert_eq!(v.action, Action::Reject);
    }
}
