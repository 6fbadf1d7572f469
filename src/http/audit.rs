//! The audit log entry for an admin action, written by the handlers that change
//! or reveal something (users, settings, contacts, data subjects).

use crate::ids::now_ms;
use crate::model::{AuditEntry, User};
use crate::state::App;

/// Records an admin action; a failure is logged, never hidden from the log.
pub async fn audit(app: &App, actor: &User, action: &str, subject: Option<&str>, detail: String) {
    let entry = AuditEntry {
        seq: 0,
        at_ms: now_ms(),
        actor: actor.id,
        action: action.into(),
        subject: subject.map(str::to_owned),
        detail,
    };
    if let Err(e) = app.store.audit(entry).await {
        tracing::error!(error = %e, action, "could not write the audit log");
    }
}
