//! Interim placeholder: the real per-recipient preparation lands in the next commit.
#![allow(dead_code, unused_variables)]

pub struct Limits {
    pub max_links: usize,
}
impl Default for Limits {
    fn default() -> Self {
        Limits { max_links: 1000 }
    }
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    Malformed,
    NoRecipients,
    NoSender,
    TooManyLinks,
}
#[derive(Debug, Clone)]
pub struct PrepareError {
    pub kind: ErrorKind,
    pub message: String,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    To,
    Cc,
    Bcc,
}
#[derive(Debug, Clone)]
pub struct Recipient {
    pub address: String,
    pub normalized: String,
    pub name: Option<String>,
    pub field: Field,
}
pub struct Draft {
    recipients: Vec<Recipient>,
    links: Vec<String>,
}
pub struct Tracking<'a> {
    pub pixel_url: &'a str,
    pub click_urls: &'a [String],
}
impl Draft {
    pub fn parse(raw: &[u8], own_click_prefix: &str, limits: &Limits) -> Result<Draft, PrepareError> {
        Err(PrepareError { kind: ErrorKind::Malformed, message: "not implemented yet".into() })
    }
    pub fn from(&self) -> Option<&Recipient> {
        None
    }
    pub fn subject(&self) -> Option<&str> {
        None
    }
    pub fn message_id(&self) -> Option<&str> {
        None
    }
    pub fn recipients(&self) -> &[Recipient] {
        &self.recipients
    }
    pub fn links(&self) -> &[String] {
        &self.links
    }
    pub fn has_html(&self) -> bool {
        false
    }
    pub fn render(&self, tracking: Option<&Tracking<'_>>) -> Vec<u8> {
        Vec::new()
    }
}
