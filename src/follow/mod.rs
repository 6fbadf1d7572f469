//! Following an email.
//!
//! `render`: from a parsed draft to the email record and one prepared copy per
//! recipient, each with its own tokens (pure).

pub mod render;

pub use render::{encoded_links, prepare, record, render_copy, Plan};
