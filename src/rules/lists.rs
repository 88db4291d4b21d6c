//! Allow and deny lists under `rules/lists/`: one entry a line, `#` comments.
//!
//! | file | entries |
//! |---|---|
//! | `allow_ip.txt`, `deny_ip.txt` | an IP address or CIDR block (`192.0.2.0/24`, `2001:db8::/32`) |
//! | `allow_helo.txt`, `deny_helo.txt` | a host name, or `.example.com` for it and every subdomain |
//! | `allow_sender.txt`, `deny_sender.txt` | an address, or a domain (`example.com` / `.example.com`) |
//! | `allow_sender_unauthenticated.txt` | the same, trusted without authentication (lint warns) |
//! | `allow_rcpt.txt`, `deny_rcpt.txt` | an address, or a domain |
//!
//! Parsing only; `RuleSet::load` reads the files.

use super::RulesError;
use crate::config::lists::{parse, NameList};
use std::path::Path;

/// What a list matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListTarget {
    /// The client address.
    Ip,
    /// The HELO name.
    Helo,
    /// The envelope sender (deny) and the authenticated sender or author (allow).
    Sender,
    /// The envelope sender, allowed without authentication (`allow_sender_unauthenticated.txt`).
    SenderUnauthenticated,
    /// A recipient.
    Rcpt,
}

/// All lists, allow and deny per target.
#[derive(Debug, Clone, Default)]
pub struct Lists {
    /// (target, allow list, deny list)
    pub lists: Vec<(ListTarget, NameList, NameList)>,
}

impl Lists {
    /// The allow and deny lists for a target.
    pub fn get(&self, target: ListTarget) -> Option<(&NameList, &NameList)> {
        self.lists
            .iter()
            .find(|(t, _, _)| *t == target)
            .map(|(_, a, d)| (a, d))
    }

    /// True when every list is empty.
    pub fn is_empty(&self) -> bool {
        self.lists
            .iter()
            .all(|(_, a, d)| a.is_empty() && d.is_empty())
    }
}

/// Loads `DIR/lists/{allow,deny}_{ip,helo,sender,rcpt}.txt`; missing files are empty lists.
pub fn load(dir: &Path) -> Result<Lists, RulesError> {
    let mut lists = Lists::default();
    for (target, stem) in [
        (ListTarget::Ip, "ip"),
        (ListTarget::Helo, "helo"),
        (ListTarget::Sender, "sender"),
        (ListTarget::SenderUnauthenticated, "sender_unauthenticated"),
        (ListTarget::Rcpt, "rcpt"),
    ] {
        let read = |kind: &str| -> Result<NameList, RulesError> {
            let path = dir.join("lists").join(format!("{kind}_{stem}.txt"));
            let label = path.display().to_string();
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(parse(&text, &label, target == ListTarget::Ip)?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NameList::default()),
                Err(source) => Err(RulesError::Read {
                    path: label,
                    source,
                }),
            }
        };
        // There is no deny list without authentication: a deny entry never needs it.
        let deny = if target == ListTarget::SenderUnauthenticated {
            NameList::default()
        } else {
            read("deny")?
        };
        lists.lists.push((target, read("allow")?, deny));
    }
    Ok(lists)
}
