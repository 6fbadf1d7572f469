//! Delivery of prepared copies through an SMTP relay (lettre).
//!
//! Each copy is sent on its own with exactly one envelope recipient, so a copy
//! reaches only the person its tokens belong to; the headers (To, Cc) still show
//! everyone, as in the original. Failures are returned per recipient, never
//! swallowed.

use std::time::Duration;

use lettre::address::Envelope;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Mailer {
    /// `smtp://host:port` (plain), `smtp://host:port?tls=required` (STARTTLS) or
    /// `smtps://user:pass@host:port` (implicit TLS).
    pub fn from_url(url: &str) -> Result<Mailer, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("smtp_url: {e}"))?
            .timeout(Some(Duration::from_secs(30)))
            .build();
        Ok(Mailer { transport })
    }

    /// Sends one prepared copy to one recipient.
    pub async fn send(&self, from: &str, to: &str, raw: &[u8]) -> Result<(), String> {
        let from: Address = from
            .parse()
            .map_err(|e| format!("sender address {from:?}: {e}"))?;
        let to_addr: Address = to
            .parse()
            .map_err(|e| format!("recipient address {to:?}: {e}"))?;
        let envelope =
            Envelope::new(Some(from), vec![to_addr]).map_err(|e| format!("envelope: {e}"))?;
        self.transport
            .send_raw(&envelope, raw)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
