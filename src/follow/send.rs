//! The delivery step of a followed email: each copy rendered (off the runtime)
//! just before it is sent through the SMTP relay (`deliver`), one at a time, so
//! one copy is in memory. Runs only after the record is stored; each
//! recipient's result lands in the record (the caller stores it again).

use std::sync::Arc;

use super::Job;
use crate::deliver::Mailer;
use crate::ids::now_ms;
use crate::model::{Delivery, EmailRecord};

/// Sends recipient `i`'s copy to recipient `i`, for every recipient, and sets
/// each one's `delivery`. A failure is logged and recorded, never swallowed.
pub(super) async fn send_each(mailer: &Mailer, job: &Arc<Job>, record: &mut EmailRecord) {
    for (i, r) in record.recipients.iter_mut().enumerate() {
        let task = job.clone();
        let copy = tokio::task::spawn_blocking(move || task.render(i)).await;
        let result = match copy {
            Ok(copy) => mailer.send(&record.from, &r.address, &copy).await,
            Err(_) => Err("the copy could not be prepared".into()),
        };
        r.delivery = Some(match result {
            Ok(()) => Delivery {
                status: "sent".into(),
                detail: None,
                at_ms: now_ms(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "SMTP delivery failed for one recipient");
                Delivery {
                    status: "failed".into(),
                    detail: Some(e),
                    at_ms: now_ms(),
                }
            }
        });
    }
}
