//! The key ring on disk: `keyring.json` in the data directory.
//!
//! The file holds every signing key ever minted with (id, secret, creation time) and
//! the id of the one used for new tokens. It is written atomically (temp file +
//! rename, mode 0600) so a crash never leaves half a ring, and `mailbeacon keys
//! rotate` can change it while a server runs: servers reload it when its
//! modification time changes (see `App::reload_keys_if_changed`).
//!
//! With the Redis store the same JSON lives in Redis instead, so every process
//! shares one ring; the `*_json` functions below work on that text and the store
//! keeps it (see `main.rs`).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::token::{KeyRing, SigningKey};

pub const FILE_NAME: &str = "keyring.json";

#[derive(Serialize, Deserialize)]
struct KeyFile {
    current: u16,
    keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
struct KeyEntry {
    id: u16,
    secret: String,
    created: String,
}

/// A description of one key, for `mailbeacon keys list` (never the secret).
pub struct KeyInfo {
    pub id: u16,
    pub created: String,
    pub current: bool,
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// Loads the ring, creating it with one fresh key when the file does not exist.
/// Returns the ring and whether it was just created.
pub fn load_or_create(data_dir: &Path) -> Result<(KeyRing, bool), String> {
    let p = path(data_dir);
    if !p.exists() {
        let file = KeyFile {
            current: 1,
            keys: vec![new_entry(1)?],
        };
        write(&p, &file)?;
        return Ok((to_ring(&file)?, true));
    }
    Ok((load(data_dir)?, false))
}

pub fn load(data_dir: &Path) -> Result<KeyRing, String> {
    to_ring(&read(&path(data_dir))?)
}

/// Adds a new key and makes it the minting key; older keys keep verifying.
/// Returns the new key's id.
pub fn rotate(data_dir: &Path) -> Result<u16, String> {
    let p = path(data_dir);
    let mut file = read(&p)?;
    let id = file
        .keys
        .iter()
        .map(|k| k.id)
        .max()
        .unwrap_or(0)
        .checked_add(1)
        .ok_or("the key ring is full (65535 keys)")?;
    file.keys.push(new_entry(id)?);
    file.current = id;
    write(&p, &file)?;
    Ok(id)
}

pub fn list(data_dir: &Path) -> Result<Vec<KeyInfo>, String> {
    let file = read(&path(data_dir))?;
    Ok(file
        .keys
        .iter()
        .map(|k| KeyInfo {
            id: k.id,
            created: k.created.clone(),
            current: k.id == file.current,
        })
        .collect())
}

/// A new ring with one fresh key, as JSON.
pub fn new_json() -> Result<String, String> {
    let file = KeyFile {
        current: 1,
        keys: vec![new_entry(1)?],
    };
    serde_json::to_string_pretty(&file).map_err(|e| e.to_string())
}

/// Writes a ring's JSON as the data directory's key ring file (atomically).
pub fn write_json(data_dir: &Path, text: &str) -> Result<(), String> {
    write(&path(data_dir), &parse(text)?)
}

/// Parses a ring from its JSON.
pub fn from_json(text: &str) -> Result<KeyRing, String> {
    to_ring(&parse(text)?)
}

/// `rotate` on a ring's JSON: returns the new JSON and the new key's id.
pub fn rotate_json(text: &str) -> Result<(String, u16), String> {
    let mut file = parse(text)?;
    let id = add_key(&mut file)?;
    let json = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())?;
    Ok((json, id))
}

/// `list` on a ring's JSON.
pub fn list_json(text: &str) -> Result<Vec<KeyInfo>, String> {
    Ok(describe(&parse(text)?))
}

fn parse(text: &str) -> Result<KeyFile, String> {
    serde_json::from_str(text).map_err(|e| format!("not a valid key ring: {e}"))
}

fn add_key(file: &mut KeyFile) -> Result<u16, String> {
    let id = file
        .keys
        .iter()
        .map(|k| k.id)
        .max()
        .unwrap_or(0)
        .checked_add(1)
        .ok_or("the key ring is full (65535 keys)")?;
    file.keys.push(new_entry(id)?);
    file.current = id;
    Ok(id)
}

fn describe(file: &KeyFile) -> Vec<KeyInfo> {
    file.keys
        .iter()
        .map(|k| KeyInfo {
            id: k.id,
            created: k.created.clone(),
            current: k.id == file.current,
        })
        .collect()
}

/// The file's modification time, used to notice rotations made by another process.
pub fn modified(data_dir: &Path) -> Option<SystemTime> {
    fs::metadata(path(data_dir)).and_then(|m| m.modified()).ok()
}

fn new_entry(id: u16) -> Result<KeyEntry, String> {
    let mut secret = [0u8; 32];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| "the system random generator failed")?;
    Ok(KeyEntry {
        id,
        secret: STANDARD.encode(secret),
        created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    })
}

fn to_ring(file: &KeyFile) -> Result<KeyRing, String> {
    let mut keys = Vec::with_capacity(file.keys.len());
    for k in &file.keys {
        let secret = STANDARD
            .decode(&k.secret)
            .map_err(|_| format!("key {} in the key ring is not valid base64", k.id))?;
        if secret.len() < 32 {
            return Err(format!(
                "key {} in the key ring is shorter than 32 bytes",
                k.id
            ));
        }
        keys.push(SigningKey::new(k.id, &secret));
    }
    KeyRing::new(keys, file.current).ok_or_else(|| {
        format!(
            "the key ring's current key {} is not in the ring",
            file.current
        )
    })
}

fn read(p: &Path) -> Result<KeyFile, String> {
    let text = fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not a valid key ring: {e}", p.display()))
}

fn write(p: &Path, file: &KeyFile) -> Result<(), String> {
    let dir = p.parent().ok_or("key ring path has no parent")?;
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = p.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(file).map_err(|e| e.to_string())?;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(&body)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, p).map_err(|e| format!("cannot replace {}: {e}", p.display()))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
