//! Entra-like access tokens for the sign-in tests. Entra cannot be reached from
//! here, so tokens are signed with the RSA keys in `tests/fixtures/entra/`
//! (`test-key.pem` is in `jwks.json`, which the server under test is given;
//! `other-key.pem` is not), and carry the claims Entra's v2.0 tokens carry.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const TID: &str = "11111111-2222-3333-4444-555555555555";
pub const AUD: &str = "api://mailbeacon.test/6a1b0c9e";
pub const CLIENT_ID: &str = "6a1b0c9e-0000-4000-8000-000000000001";

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/entra")
        .join(name)
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Valid v2.0 claims for `username` (object id `oid`), good for an hour.
pub fn claims(username: &str, oid: &str) -> Value {
    json!({
        "iss": format!("https://login.microsoftonline.com/{TID}/v2.0"),
        "aud": AUD,
        "tid": TID,
        "oid": oid,
        "scp": "access_as_user",
        "preferred_username": username,
        "iat": now(),
        "nbf": now() - 10,
        "exp": now() + 3600,
    })
}

/// `claims` signed RS256 with the fixture key `key`, under key id `kid`.
pub fn sign(claims: &Value, key: &str, kid: &str) -> String {
    let pem = std::fs::read(fixture(key)).unwrap();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.into());
    encode(&h, claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
}
