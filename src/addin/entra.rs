//! Sign-in with Microsoft Entra: the add-in obtains an access token through
//! Nested App Authentication (MSAL in the task pane) and sends it as the bearer
//! token; this module checks it and names the user it belongs to.
//!
//! Checked: the RS256 signature against the configured JWKS (an https:// URL,
//! e.g. `https://login.microsoftonline.com/common/discovery/v2.0/keys`, or a
//! file), `exp` and `nbf` (60 s leeway), `aud` (one of the configured
//! audiences), `iss` (the v2.0 or v1 issuer of the token's own `tid`), `tid` (one
//! of the configured tenants, if any) and `scp` (must hold the configured scope).
//! Keys are cached for an hour; an unknown `kid` refetches them (at most once a
//! minute), which is how Entra's key rollover reaches us. Fetches are single
//! flight (one at a time; concurrent callers wait for its result as tasks, no
//! thread each), and a failed fetch is not retried before a backoff (10 s,
//! doubling to 5 min): however many JWT-shaped bearers arrive, the JWKS is
//! tried once per backoff period. Callers are told only `KEYS_UNAVAILABLE`
//! (a 401), never the JWKS location or the network error (logged). Pixels and
//! clicks never authenticate, so they never wait on any of this.
//!
//! A token maps to a user by `tid`+`oid` only (`entra:{tid}:{oid}`, see
//! `auth`): linked by an admin, or on first sign-in by the tenant's sign-in
//! name (`preferred_username`, else `upn`; never `email`) matching a user, the
//! tenant being one of the required `entra_tenants`, and only onto a user not
//! yet linked to another Entra identity. The link is stored, so later renames
//! in Entra do not move the account. Users are provisioned by an admin, never
//! by a token.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::EntraConfig;

const KEYS_TTL: Duration = Duration::from_secs(3600);
const REFETCH_MIN: Duration = Duration::from_secs(60);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What a valid token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub tid: String,
    pub oid: String,
    /// Lowercased `preferred_username` (else `upn`), when present: the
    /// tenant's sign-in name. Never the `email` claim, which a user may set.
    pub username: Option<String>,
}

impl Identity {
    /// The store key of this identity.
    pub fn key(&self) -> String {
        format!("entra:{}:{}", self.tid, self.oid)
    }
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    tid: String,
    oid: String,
    #[serde(default)]
    scp: Option<String>,
    #[serde(default)]
    preferred_username: Option<String>,
    #[serde(default)]
    upn: Option<String>,
}

/// Returns true if and only if `token` has the shape of a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && token.starts_with("eyJ")
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

struct Cached {
    keys: JwkSet,
    fetched: Instant,
}

/// The key cache and the fetch schedule.
#[derive(Default)]
struct KeyState {
    /// The last key set fetched (kept while later fetches fail).
    keys: Option<Cached>,
    /// When a fetch was last tried (success or not).
    last_attempt: Option<Instant>,
    /// Fetches failed in a row, and no new try before `retry_at`.
    failures: u32,
    retry_at: Option<Instant>,
}

/// What to do for one token's `kid`.
enum Next {
    Use(JwkSet),
    Fetch,
    Unavailable,
}

/// The wait after `failures` failed fetches in a row: 10 s, doubling, at most 5 min.
fn backoff(failures: u32) -> Duration {
    (FIRST_BACKOFF * 2u32.saturating_pow(failures.saturating_sub(1).min(8))).min(MAX_BACKOFF)
}

/// What an API client is told when the keys cannot be had: nothing about the
/// JWKS location or the network (that goes to the log).
pub const KEYS_UNAVAILABLE: &str =
    "the sign-in service's keys are unavailable, so the token cannot be checked; try again later";

pub struct Validator {
    cfg: EntraConfig,
    state: RwLock<KeyState>,
    /// Single flight: at most one fetch at a time; the others wait for it
    /// (as tasks, holding no thread) and then use its result.
    fetching: tokio::sync::Mutex<()>,
    attempts: AtomicU64,
}

impl Validator {
    pub fn new(cfg: EntraConfig) -> Validator {
        Validator {
            cfg,
            state: RwLock::new(KeyState::default()),
            fetching: tokio::sync::Mutex::new(()),
            attempts: AtomicU64::new(0),
        }
    }

    /// How many key fetches were tried since start.
    pub fn fetch_attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    async fn load_keys(&self) -> Result<JwkSet, String> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let src = self.cfg.jwks.clone();
        // One blocking thread at most (single flight), for at most FETCH_TIMEOUT.
        let text = tokio::task::spawn_blocking(move || -> Result<String, String> {
            if src.starts_with("https://") {
                ureq::get(&src)
                    .timeout(FETCH_TIMEOUT)
                    .call()
                    .map_err(|e| format!("cannot fetch the JWKS from {src}: {e}"))?
                    .into_string()
                    .map_err(|e| format!("cannot read the JWKS from {src}: {e}"))
            } else {
                std::fs::read_to_string(&src)
                    .map_err(|e| format!("cannot read the JWKS file {src}: {e}"))
            }
        })
        .await
        .map_err(|e| format!("JWKS task failed: {e}"))??;
        serde_json::from_str(&text).map_err(|e| format!("the JWKS is not valid: {e}"))
    }

    fn next(&self, kid: &str) -> Next {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let cached = st.keys.as_ref();
        let fresh = cached.is_some_and(|c| now.duration_since(c.fetched) < KEYS_TTL);
        let has_kid = cached.is_some_and(|c| c.keys.find(kid).is_some());
        let use_cached = || match cached {
            Some(c) => Next::Use(c.keys.clone()),
            None => Next::Unavailable,
        };
        if fresh && has_kid {
            return use_cached();
        }
        // After a failure, nothing is fetched before the backoff ends.
        if st.retry_at.is_some_and(|r| now < r) {
            return use_cached();
        }
        // An unknown kid refetches at most once a minute.
        if fresh
            && st
                .last_attempt
                .is_some_and(|t| now.duration_since(t) < REFETCH_MIN)
        {
            return use_cached();
        }
        Next::Fetch
    }

    /// The key set to check a token signed with `kid`: from cache unless it is
    /// stale or lacks `kid`; then fetched by one caller at a time.
    async fn keys_for(&self, kid: &str) -> Result<JwkSet, &'static str> {
        if let Next::Use(k) = self.next(kid) {
            return Ok(k);
        }
        let _one = self.fetching.lock().await;
        // Whoever held the lock before may have fetched (or failed) meanwhile.
        if let Next::Fetch = self.next(kid) {
            let got = self.load_keys().await;
            let now = Instant::now();
            let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
            st.last_attempt = Some(now);
            match got {
                Ok(keys) => {
                    st.keys = Some(Cached { keys, fetched: now });
                    st.failures = 0;
                    st.retry_at = None;
                }
                Err(e) => {
                    st.failures = st.failures.saturating_add(1);
                    let wait = backoff(st.failures);
                    st.retry_at = Some(now + wait);
                    tracing::error!(error = %e, retry_in_s = wait.as_secs(), "Entra JWKS unavailable");
                }
            }
        }
        match self.next(kid) {
            Next::Use(k) => Ok(k),
            Next::Fetch | Next::Unavailable => Err(KEYS_UNAVAILABLE),
        }
    }

    /// Checks a token; the error says why it was refused (for the API client).
    pub async fn validate(&self, token: &str) -> Result<Identity, String> {
        let header = decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        if header.alg != Algorithm::RS256 {
            return Err(format!(
                "tokens must be signed with RS256, not {:?}",
                header.alg
            ));
        }
        let kid = header.kid.ok_or("the token names no signing key (kid)")?;
        let keys = self.keys_for(&kid).await?;
        let jwk = keys
            .find(&kid)
            .ok_or_else(|| format!("unknown signing key {kid:?}"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable signing key: {e}"))?;
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&self.cfg.audiences);
        v.set_required_spec_claims(&["exp", "nbf", "aud", "iss"]);
        v.validate_nbf = true;
        v.leeway = 60;
        let data = decode::<Claims>(token, &key, &v).map_err(|e| format!("invalid token: {e}"))?;
        let c = data.claims;
        let issuers = [
            format!("https://login.microsoftonline.com/{}/v2.0", c.tid),
            format!("https://sts.windows.net/{}/", c.tid),
        ];
        if !issuers.contains(&c.iss) {
            return Err(format!(
                "issuer {:?} does not match tenant {}",
                c.iss, c.tid
            ));
        }
        if !self.cfg.tenants.contains(&c.tid) {
            return Err(format!("tenant {} is not allowed here", c.tid));
        }
        let scopes = c.scp.unwrap_or_default();
        if !scopes.split(' ').any(|s| s == self.cfg.scope) {
            return Err(format!("the token lacks the scope {:?}", self.cfg.scope));
        }
        if c.oid.is_empty() || c.tid.is_empty() {
            return Err("the token has no tid/oid".into());
        }
        Ok(Identity {
            tid: c.tid,
            oid: c.oid,
            username: c
                .preferred_username
                .or(c.upn)
                .map(|u| u.trim().to_lowercase())
                .filter(|u| !u.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJhbGciOi.eyJzdWIi.c2ln"));
        assert!(!looks_like_jwt("mb_abc"));
        assert!(!looks_like_jwt("eyJa.b"));
        assert!(!looks_like_jwt("eyJa..c"));
    }
}
