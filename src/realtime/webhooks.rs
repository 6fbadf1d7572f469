//! Webhook fan-out and delivery.
//!
//! Fan-out: for each published event, each matching subscription (the owner's
//! own, or an admin's `all`; the event's type listed; machine activity only with
//! `include_machine`; not disabled) gets a job on the shared `webhooks` queue,
//! id `<event id>:<webhook id>`, so an enqueue repeated after a crash changes
//! nothing, and processes sharing the store share the queue (each job leased by
//! one of them).
//!
//! Delivery (the queue's handler): a `POST` of the event's JSON through
//! `outbound::http` (the `MAILBEACON_OUTBOUND_ALLOW` policy, a 10 s limit),
//! signed per Standard Webhooks 1.0 (`webhook-id` = the event id on every
//! attempt, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body">` with the base64-decoded part of the secret after
//! `whsec_`). A 2xx is done; anything else is retried with `Backoff::WEBHOOKS`
//! (first retry within 10 s, for 24 h from the first try). Every attempt goes to
//! the webhook's bounded log with its status or error and next try; a webhook
//! whose deliveries have all failed for 24 h is disabled. At most
//! `PER_HOOK_IN_FLIGHT` deliveries per webhook run at once, so a slow receiver
//! holds few of the worker's slots and never delays the others.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Semaphore;

use super::AppEvent;
use crate::ids::now_ms;
use crate::jobs::{Backoff, Outcome};
use crate::model::{Attempt, Webhook};
use crate::outbound::{self, OutboundError, OutboundPolicy};
use crate::store::queue::{Leased, NewJob};
use crate::store::Store;

/// The queue deliveries wait in.
pub const QUEUE: &str = "webhooks";
/// A webhook failing this long is disabled.
pub const DISABLE_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Deliveries to one webhook at once.
pub const PER_HOOK_IN_FLIGHT: usize = 4;
/// How long the subscription list is cached.
const SUBS_TTL: Duration = Duration::from_secs(1);

/// A delivery job's payload.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct DeliveryJob {
    /// The webhook.
    pub w: u64,
    /// When the delivery was first due (ms): retries stop 24 h after.
    pub s: u64,
    /// The event as sent.
    pub e: Value,
    /// Asked for by hand (`…/retry`): tried even while the webhook is disabled.
    #[serde(default)]
    pub manual: bool,
}

/// A new signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    format!(
        "whsec_{}",
        STANDARD.encode(crate::ids::random_bytes::<32>())
    )
}

/// `v1,<signature>` for one delivery.
pub fn sign(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .unwrap_or_else(|_| secret.as_bytes().to_vec());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
}

/// Whether `hook` receives `event`.
pub fn matches(hook: &Webhook, event: &AppEvent) -> bool {
    hook.disabled_ms.is_none()
        && (hook.all || hook.owner == event.owner)
        && (!event.machine || hook.include_machine)
        && hook.events.iter().any(|t| t == event.kind.as_str())
}

/// Checks a webhook URL: http(s), a host, and an address the policy permits
/// (resolved now; every delivery resolves again, through the same policy).
pub async fn check_url(policy: &OutboundPolicy, url: &str) -> Result<(), OutboundError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| OutboundError::InvalidTarget("not a valid URL"))?;
    let port = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        _ => {
            return Err(OutboundError::InvalidTarget(
                "the URL must be http or https",
            ))
        }
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or(OutboundError::InvalidTarget("the URL has no host"))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(OutboundError::InvalidTarget(
            "the URL may not carry credentials",
        ));
    }
    let port = uri.port_u16().unwrap_or(port);
    outbound::resolve(policy, host, port, Duration::from_secs(5))
        .await
        .map(|_| ())
}

/// The subscriptions, cached for `SUBS_TTL` (so a new webhook receives events
/// within about a second on every process).
#[derive(Default)]
pub struct Subscriptions {
    cached: RwLock<Option<(Instant, Arc<Vec<Webhook>>)>>,
    /// Bumped by `invalidate`: a read of the store that began before a change
    /// must not be cached as if it came after it.
    generation: std::sync::atomic::AtomicU64,
}

impl Subscriptions {
    pub async fn get(&self, store: &Store) -> Arc<Vec<Webhook>> {
        if let Some((at, list)) = &*self.cached.read().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < SUBS_TTL {
                return list.clone();
            }
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        match store.webhooks().await {
            Ok(list) => {
                let list = Arc::new(list);
                let mut cached = self.cached.write().unwrap_or_else(|p| p.into_inner());
                // Changed while we read: use what we read this once, cache nothing.
                if self.generation.load(std::sync::atomic::Ordering::Acquire) == generation {
                    *cached = Some((Instant::now(), list.clone()));
                }
                list
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the webhooks; using the last list");
                self.cached
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(|(_, l)| l.clone())
                    .unwrap_or_default()
            }
        }
    }

    /// A webhook was created or deleted here: read the list again next time.
    pub fn invalidate(&self) {
        let mut cached = self.cached.write().unwrap_or_else(|p| p.into_inner());
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        *cached = None;
    }
}

/// The delivery jobs for published events (ids set). An event's JSON is made
/// only when some subscription wants it.
pub fn fan_out(hooks: &[Webhook], events: &[AppEvent], now: u64) -> Vec<NewJob> {
    let mut jobs = Vec::new();
    if hooks.is_empty() {
        return jobs;
    }
    for event in events {
        let mut json = None;
        for hook in hooks.iter().filter(|h| matches(h, event)) {
            let payload = DeliveryJob {
                w: hook.id,
                s: now,
                e: json.get_or_insert_with(|| event.to_json()).clone(),
                manual: false,
            };
            match NewJob::json(job_id(&event.id, hook.id), now, &payload) {
                Ok(j) => jobs.push(j),
                Err(e) => tracing::error!(error = %e, "cannot build a delivery job"),
            }
        }
    }
    jobs
}

pub fn job_id(event_id: &str, hook: u64) -> String {
    format!("{event_id}:{hook:016x}")
}

/// Runs delivery jobs.
pub struct Deliverer {
    pub store: Store,
    pub policy: OutboundPolicy,
    pub subs: Arc<Subscriptions>,
    in_flight: DashMap<u64, Arc<Semaphore>>,
}

impl Deliverer {
    pub fn new(store: Store, policy: OutboundPolicy, subs: Arc<Subscriptions>) -> Deliverer {
        Deliverer {
            store,
            policy,
            subs,
            in_flight: DashMap::new(),
        }
    }

    pub async fn run(&self, job: Leased) -> Outcome {
        let p: DeliveryJob = match job.json() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(job = %job.id, error = %e, "a delivery job is malformed; dropped");
                return Outcome::Fail;
            }
        };
        let hooks = self.subs.get(&self.store).await;
        let Some(hook) = hooks.iter().find(|h| h.id == p.w) else {
            // Deleted since: nothing to deliver to.
            return Outcome::Done;
        };
        if hook.disabled_ms.is_some() && !p.manual {
            return Outcome::Fail;
        }
        let sem = self
            .in_flight
            .entry(hook.id)
            .or_insert_with(|| Arc::new(Semaphore::new(PER_HOOK_IN_FLIGHT)))
            .clone();
        let Ok(_permit) = sem.try_acquire() else {
            // This receiver already has its share of the worker: later.
            return Outcome::RetryAt(now_ms() + 200);
        };
        let id = p.e["id"].as_str().unwrap_or_default().to_owned();
        // Serializing a Value cannot fail.
        let body = serde_json::to_vec(&p.e).unwrap_or_default();
        let ts = now_ms() / 1000;
        let headers = [
            ("webhook-id", id.clone()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", sign(&hook.secret, &id, ts, &body)),
        ];
        let limits = outbound::http::Limits {
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(10),
            max_response_bytes: 4096,
        };
        let result = outbound::http::request(
            &self.policy,
            hyper::Method::POST,
            &hook.url,
            &headers,
            Some(Bytes::from(body)),
            limits,
        )
        .await;
        let now = now_ms();
        let (ok, status, error) = match &result {
            Ok(r) => ((200..300).contains(&r.status), Some(r.status), None),
            Err(e) => (false, None, Some(e.code().to_owned())),
        };
        let disable_ms = DISABLE_AFTER.as_millis() as u64;
        // Failing for 24 h with this attempt: the webhook is disabled, and only
        // a delivery asked for by hand goes on.
        let disabling = !ok
            && hook
                .failing_since_ms
                .is_some_and(|since| now.saturating_sub(since) >= disable_ms);
        let next = if ok || (disabling && !p.manual) {
            None
        } else {
            Backoff::WEBHOOKS.next_at(job.attempts, now, p.s)
        };
        let attempt = Attempt {
            delivery: id,
            event_type: p.e["type"].as_str().unwrap_or_default().to_owned(),
            attempt: job.attempts,
            at_ms: now,
            status,
            error,
            state: match (ok, next) {
                (true, _) => "delivered",
                (false, Some(_)) => "retrying",
                (false, None) => "failed",
            }
            .into(),
            next_try_ms: next,
            event: p.e.clone(),
        };
        let health = self
            .store
            .webhook_attempt(hook.id, &attempt, ok, now, disable_ms)
            .await;
        let disabled = match health {
            Ok(h) => h.disabled_ms.is_some(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot log a webhook attempt");
                false
            }
        };
        if disabled && hook.disabled_ms.is_none() {
            tracing::warn!(webhook = %crate::ids::id_to_text(hook.id), "webhook disabled after failing for 24 h");
            self.subs.invalidate();
        }
        match (ok, next) {
            (true, _) => Outcome::Done,
            (false, Some(at)) => Outcome::RetryAt(at),
            (false, None) => Outcome::Fail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::EventType;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example in the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(new_secret().starts_with("whsec_"));
        assert_eq!(STANDARD.decode(&new_secret()[6..]).unwrap().len(), 32);
    }

    #[test]
    fn matching_follows_owner_type_machine_and_disabled() {
        let hook = Webhook {
            id: 1,
            owner: 7,
            url: "http://x".into(),
            secret: new_secret(),
            events: vec!["email.opened".into()],
            include_machine: false,
            all: false,
            created_ms: 0,
            failing_since_ms: None,
            disabled_ms: None,
        };
        let ev = AppEvent {
            id: "e".into(),
            kind: EventType::EmailOpened,
            at_ms: 0,
            owner: 7,
            email_id: 1,
            recipient: None,
            machine: false,
            first: true,
            extra: Default::default(),
        };
        assert!(matches(&hook, &ev));
        assert!(!matches(
            &hook,
            &AppEvent {
                owner: 8,
                ..ev.clone()
            }
        ));
        assert!(matches(
            &Webhook {
                all: true,
                ..hook.clone()
            },
            &AppEvent {
                owner: 8,
                ..ev.clone()
            }
        ));
        assert!(!matches(
            &hook,
            &AppEvent {
                machine: true,
                ..ev.clone()
            }
        ));
        assert!(matches(
            &Webhook {
                include_machine: true,
                ..hook.clone()
            },
            &AppEvent {
                machine: true,
                ..ev.clone()
            }
        ));
        assert!(!matches(
            &hook,
            &AppEvent {
                kind: EventType::EmailClicked,
                ..ev.clone()
            }
        ));
        assert!(!matches(
            &Webhook {
                disabled_ms: Some(1),
                ..hook.clone()
            },
            &ev
        ));
    }
}
