//! `moat quarantine list|show|release`: the messages kept by `[quarantine]`. Release sends a
//! message to the upstream MTA the way `serve` would have (the original client announced with
//! XCLIENT/XFORWARD, the original envelope), with a header saying it was released, and removes
//! it from the quarantine once the MTA accepted it.

use crate::config::Config;
use crate::records::{Record, RecordDir};
use crate::smtp::reply::Reply;
use crate::upstream::{ClientFacts, Upstream};
use anyhow::{bail, Context as _};

/// The quarantine of a config, or an error when it is not configured.
fn open(config: &Config) -> anyhow::Result<RecordDir> {
    if !config.quarantine.enabled {
        bail!("{}: [quarantine] is not enabled", config.source.display());
    }
    Ok(RecordDir::quarantine(&config.quarantine))
}

/// One line per kept message, oldest first.
pub fn list(config: &Config, json: bool) -> anyhow::Result<String> {
    let records = open(config)?.list()?;
    if json {
        return Ok(format!("{}\n", serde_json::to_string(&records)?));
    }
    let mut out = format!(
        "{:<24} {:<20} {:<22} {:<28} {:>6}  {}\n",
        "id", "time (UTC)", "client", "from", "score", "rcpts"
    );
    for r in &records {
        out.push_str(&format!(
            "{:<24} {:<20} {:<22} {:<28} {:>6.1}  {}\n",
            r.id,
            utc(r.time),
            r.client,
            if r.mail_from.is_empty() {
                "<>"
            } else {
                &r.mail_from
            },
            r.score,
            r.rcpts.join(",")
        ));
    }
    out.push_str(&format!("{} message(s)\n", records.len()));
    Ok(out)
}

/// The record (as JSON) and the message.
pub fn show(config: &Config, id: &str) -> anyhow::Result<String> {
    let (record, message) = open(config)?.get(id)?;
    Ok(format!(
        "{}\n--- message ({} octets) ---\n{}",
        serde_json::to_string_pretty(&record)?,
        message.len(),
        String::from_utf8_lossy(&message)
    ))
}

/// `YYYY-MM-DD HH:MM:SS` for Unix seconds.
fn utc(secs: u64) -> String {
    let (y, m, d, hh, mm, ss) = crate::verdict::headers::civil_utc(secs);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}")
}

/// Sends the message to the upstream with its original envelope; removes it on success and
/// returns the MTA's reply.
pub async fn release(config: &Config, id: &str) -> anyhow::Result<Reply> {
    let q = open(config)?;
    let (record, message) = q.get(id)?;
    let reply = reinject(config, &record, &message).await?;
    if !reply.is_positive() {
        bail!("the MTA refused the released message: {reply}");
    }
    q.remove(id)?;
    tracing::info!(id, reply = %reply, "quarantine: message released");
    Ok(reply)
}

async fn reinject(config: &Config, record: &Record, message: &[u8]) -> anyhow::Result<Reply> {
    let settings = crate::app::upstream_settings(config)?;
    let client = ClientFacts {
        addr: record
            .client
            .parse()
            .with_context(|| format!("record {}: bad client address", record.id))?,
        name: record.client_name.clone(),
        helo: record.helo.clone(),
        proto: "ESMTP",
    };
    let mut up = Upstream::connect(&settings, &client)
        .await
        .with_context(|| format!("upstream {}", settings.address))?;
    let mail = up
        .command(&format!("MAIL FROM:<{}>", record.mail_from), "MAIL")
        .await?;
    if !mail.is_positive() {
        up.quit().await;
        return Ok(mail);
    }
    let mut accepted = 0;
    for rcpt in &record.rcpts {
        let r = up.command(&format!("RCPT TO:<{rcpt}>"), "RCPT").await?;
        if r.is_positive() {
            accepted += 1;
        } else {
            tracing::warn!(id = %record.id, rcpt, reply = %r, "release: recipient refused");
        }
    }
    if accepted == 0 {
        up.quit().await;
        bail!("the MTA refused every recipient");
    }
    let header = format!(
        "X-Moat-Released: {} from quarantine {} (was {} with score {:.1})\r\n",
        crate::verdict::headers::rfc5322_date(std::time::SystemTime::now()),
        record.id,
        record.action,
        record.score
    );
    let reply = up.data(header.as_bytes(), message).await?;
    up.quit().await;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(super::utc(1_764_460_800 + 3661), "2025-11-30 01:01:01");
    }
}
