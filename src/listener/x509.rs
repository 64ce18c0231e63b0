//! The few fields of an X.509 certificate ringlb reports (its serial number and its validity), read
//! from the DER encoding (RFC 5280 section 4.1) without a full parser: rustls and webpki check
//! what matters for the handshake; these are for `ringlb check`, the log and the expiry check.

use crate::calendar::{civil_from_days, days_from_civil};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What ringlb tells about a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFacts {
    /// The serial number in upper-case hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// Valid from.
    pub not_before: SystemTime,
    /// Valid until.
    pub not_after: SystemTime,
}

/// Reads the serial and validity of the DER certificate `der`; `None` if it is not one.
pub fn facts(der: &[u8]) -> Option<CertificateFacts> {
    let (0x30, certificate, _) = tlv(der)? else { return None };
    let (0x30, tbs, _) = tlv(certificate)? else { return None };
    let mut rest = tbs;
    // version [0] EXPLICIT, absent for v1.
    if let Some((0xa0, _, after)) = tlv(rest) {
        rest = after;
    }
    let (0x02, serial, after) = tlv(rest)? else { return None };
    let (0x30, _signature, after) = tlv(after)? else { return None };
    let (0x30, _issuer, after) = tlv(after)? else { return None };
    let (0x30, validity, _) = tlv(after)? else { return None };
    let (before_tag, before, after) = tlv(validity)?;
    let (after_tag, not_after, _) = tlv(after)?;
    let digits = match serial {
        [0, rest @ ..] if !rest.is_empty() => rest,
        all => all,
    };
    Some(CertificateFacts {
        serial: digits.iter().map(|b| format!("{b:02X}")).collect(),
        not_before: time(before_tag, before)?,
        not_after: time(after_tag, not_after)?,
    })
}

/// One DER element at the front of `input`: its tag, its content and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(count)?;
        rest = after;
        bytes.iter().fold(0usize, |length, b| (length << 8) | usize::from(*b))
    };
    let (content, rest) = rest.split_at_checked(length)?;
    Some((tag, content, rest))
}

/// A UTCTime (tag 0x17, `YYMMDDHHMMSSZ`, years 1950 to 2049) or GeneralizedTime (tag 0x18,
/// `YYYYMMDDHHMMSSZ`), as RFC 5280 section 4.1.2.5 allows them.
fn time(tag: u8, text: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 if text.len() == 12 => {
            let yy: i64 = text[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        0x18 if text.len() == 14 => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(match u64::try_from(seconds) {
        Ok(after) => UNIX_EPOCH + Duration::from_secs(after),
        Err(_) => UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs()),
    })
}

/// `t` as a UTC date and time, `2026-12-03 17:05:00 UTC` (times before 1970 as 1970).
pub fn utc(t: SystemTime) -> String {
    let seconds = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(seconds / 86_400).unwrap_or(i64::MAX / 2);
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_print_the_calendar() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(1_767_268_800)), "2026-01-01 12:00:00 UTC");
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(19_782 * 86_400 + 61)), "2024-02-29 00:01:01 UTC");
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(946_684_799)), "1999-12-31 23:59:59 UTC");
    }

    #[test]
    fn both_time_forms_are_read() {
        let utc = time(0x17, b"260101120000Z").unwrap();
        assert_eq!(utc.duration_since(UNIX_EPOCH).unwrap().as_secs(), 1_767_268_800);
        let general = time(0x18, b"20260101120000Z").unwrap();
        assert_eq!(utc, general);
        assert_eq!(
            time(0x17, b"991231235959Z").unwrap().duration_since(UNIX_EPOCH).unwrap().as_secs(),
            946_684_799
        );
        assert!(time(0x17, b"2601011200Z").is_none());
        assert!(time(0x18, b"20261301120000Z").is_none());
        assert!(time(0x17, b"260101120000+0100").is_none());
    }

    #[test]
    fn anything_but_a_certificate_has_no_facts() {
        assert!(facts(b"").is_none());
        assert!(facts(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_none());
        assert!(facts(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
    }
}
