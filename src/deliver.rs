//! Delivery of prepared copies through an SMTP relay (lettre).
//!
//! Each copy is sent on its own with exactly one envelope recipient, so a copy
//! reaches only the person its tokens belong to; the headers (To, Cc) still show
//! everyone, as in the original. Copies leave with CRLF line ends whatever the
//! input used ([`crlf`]: SMTP's canonical form; a relay reads a message with
//! bare LF ends as one overlong line). Failures are returned per recipient,
//! never swallowed, and say whether trying again later may help
//! ([`SendError::permanent`]).

use std::borrow::Cow;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

/// Why one copy was not accepted by the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// A 5xx reply or an address the relay can never take: final. Otherwise
    /// (4xx, connection refused or lost, timeout) it may work later.
    pub permanent: bool,
    /// What happened, with the relay's reply when there was one.
    pub text: String,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Mailer {
    /// `smtp://host:port` (plain), `smtp://host:port?tls=required` (STARTTLS) or
    /// `smtps://user:pass@host:port` (implicit TLS). Every SMTP command times
    /// out after 30 s, so a dead relay holds one outbox slot, never the API.
    pub fn from_url(url: &str) -> Result<Mailer, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("smtp_url: {e}"))?
            .timeout(Some(Duration::from_secs(30)))
            .build();
        Ok(Mailer { transport })
    }

    /// Sends one prepared copy to one recipient.
    pub async fn send(&self, from: &str, to: &str, raw: &[u8]) -> Result<(), SendError> {
        let permanent = |text: String| SendError {
            permanent: true,
            text,
        };
        let from: Address = from
            .parse()
            .map_err(|e| permanent(format!("sender address {from:?}: {e}")))?;
        let to_addr: Address = to
            .parse()
            .map_err(|e| permanent(format!("recipient address {to:?}: {e}")))?;
        let envelope = Envelope::new(Some(from), vec![to_addr])
            .map_err(|e| permanent(format!("envelope: {e}")))?;
        self.transport
            .send_raw(&envelope, &crlf(raw))
            .await
            .map(|_| ())
            .map_err(|e| SendError {
                permanent: e.is_permanent(),
                text: e.to_string(),
            })
    }
}

/// `raw` with every bare LF made CRLF (a CRLF stays as it is). Nothing else
/// changes: this is the line-end normalization MIME transport requires of
/// every part, attachments included (RFC 5322 2.3, RFC 2045 2.10).
pub fn crlf(raw: &[u8]) -> Cow<'_, [u8]> {
    let bare = raw
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' && (i == 0 || raw[i - 1] != b'\r'))
        .count();
    if bare == 0 {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + bare);
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::crlf;

    #[test]
    fn bare_lf_becomes_crlf_and_nothing_else_changes() {
        assert_eq!(&*crlf(b"a\r\nb\r\n"), b"a\r\nb\r\n");
        assert!(matches!(crlf(b"a\r\nb"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(&*crlf(b"a\nb\n"), b"a\r\nb\r\n");
        assert_eq!(&*crlf(b"\na\r\nb\n\nc"), b"\r\na\r\nb\r\n\r\nc");
        // A lone CR and every other byte are left alone.
        assert_eq!(&*crlf(b"x\ry\xff\n"), b"x\ry\xff\r\n");
        assert_eq!(&*crlf(b""), b"");
    }
}
