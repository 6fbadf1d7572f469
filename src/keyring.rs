//! The key ring on disk: `keyring.json` in the data directory.
//!
//! The file holds every signing key ever minted with (id, secret, creation time) and
//! the id of the one used for new tokens; likewise every data key that sealed
//! personal data and the current one; and the lookup key for keyed hashes (never
//! rotated, see `seal`). It is written atomically (temp file +
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

use crate::seal::Sealer;
use crate::token::{KeyRing, SigningKey};

pub const FILE_NAME: &str = "keyring.json";

#[derive(Serialize, Deserialize)]
struct KeyFile {
    current: u16,
    keys: Vec<KeyEntry>,
    #[serde(default)]
    data_current: u16,
    #[serde(default)]
    data_keys: Vec<KeyEntry>,
    #[serde(default)]
    lookup: Option<String>,
}

/// Everything the key ring file yields.
pub struct Keys {
    pub signing: KeyRing,
    pub sealer: Sealer,
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

/// Loads the ring, creating it with fresh keys when the file does not exist (and
/// adding data and lookup keys to a ring written before they existed). Returns the
/// keys and whether the file was just created.
pub fn load_or_create(data_dir: &Path) -> Result<(Keys, bool), String> {
    let p = path(data_dir);
    if !p.exists() {
        let file = fresh()?;
        write(&p, &file)?;
        return Ok((to_keys(&file)?, true));
    }
    let mut file = read(&p)?;
    if complete(&mut file)? {
        write(&p, &file)?;
    }
    Ok((to_keys(&file)?, false))
}

pub fn load(data_dir: &Path) -> Result<Keys, String> {
    to_keys(&read(&path(data_dir))?)
}

/// Adds a new signing key and a new data key and makes them current; older keys
/// keep verifying and opening. Returns the new signing key's id.
pub fn rotate(data_dir: &Path) -> Result<u16, String> {
    let p = path(data_dir);
    let mut file = read(&p)?;
    let id = rotate_file(&mut file)?;
    write(&p, &file)?;
    Ok(id)
}

fn next_id(keys: &[KeyEntry]) -> Result<u16, String> {
    keys.iter()
        .map(|k| k.id)
        .max()
        .unwrap_or(0)
        .checked_add(1)
        .ok_or_else(|| "the key ring is full (65535 keys)".to_string())
}

/// Adds the data key and lookup key if missing; returns true if it changed.
fn complete(file: &mut KeyFile) -> Result<bool, String> {
    let mut changed = false;
    if file.data_keys.is_empty() {
        file.data_keys.push(new_entry(1)?);
        file.data_current = 1;
        changed = true;
    }
    if file.lookup.is_none() {
        file.lookup = Some(new_entry(0)?.secret);
        changed = true;
    }
    Ok(changed)
}

pub fn list(data_dir: &Path) -> Result<Vec<KeyInfo>, String> {
    Ok(describe(&read(&path(data_dir))?))
}

/// A new, complete ring (one signing key, one data key, a lookup key), as JSON.
pub fn new_json() -> Result<String, String> {
    to_json(&fresh()?)
}

/// A new, complete ring.
fn fresh() -> Result<KeyFile, String> {
    let mut file = KeyFile {
        current: 1,
        keys: vec![new_entry(1)?],
        data_current: 0,
        data_keys: Vec::new(),
        lookup: None,
    };
    complete(&mut file)?;
    Ok(file)
}

/// Writes a ring's JSON as the data directory's key ring file (atomically).
pub fn write_json(data_dir: &Path, text: &str) -> Result<(), String> {
    write(&path(data_dir), &parse(text)?)
}

/// The keys of a ring's JSON.
pub fn from_json(text: &str) -> Result<Keys, String> {
    to_keys(&parse(text)?)
}

/// A ring written before data and lookup keys existed, completed: `Some(new
/// JSON)` if keys had to be added (the caller stores it, compare-and-set, so
/// every process ends up with the same keys), `None` if it was complete.
pub fn complete_json(text: &str) -> Result<Option<String>, String> {
    let mut file = parse(text)?;
    if complete(&mut file)? {
        return Ok(Some(to_json(&file)?));
    }
    Ok(None)
}

/// `rotate` on a ring's JSON: returns the new JSON and the new signing key's id.
pub fn rotate_json(text: &str) -> Result<(String, u16), String> {
    let mut file = parse(text)?;
    let id = rotate_file(&mut file)?;
    Ok((to_json(&file)?, id))
}

/// `list` on a ring's JSON.
pub fn list_json(text: &str) -> Result<Vec<KeyInfo>, String> {
    Ok(describe(&parse(text)?))
}

fn parse(text: &str) -> Result<KeyFile, String> {
    serde_json::from_str(text).map_err(|e| format!("not a valid key ring: {e}"))
}

fn to_json(file: &KeyFile) -> Result<String, String> {
    serde_json::to_string_pretty(file).map_err(|e| e.to_string())
}

/// Adds a signing key and a data key and makes them current; returns the new
/// signing key's id.
fn rotate_file(file: &mut KeyFile) -> Result<u16, String> {
    complete(file)?;
    let id = next_id(&file.keys)?;
    file.keys.push(new_entry(id)?);
    file.current = id;
    let data_id = next_id(&file.data_keys)?;
    file.data_keys.push(new_entry(data_id)?);
    file.data_current = data_id;
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

fn decode_secret(k: &KeyEntry, what: &str) -> Result<Vec<u8>, String> {
    let secret = STANDARD
        .decode(&k.secret)
        .map_err(|_| format!("{what} {} in the key ring is not valid base64", k.id))?;
    if secret.len() != 32 {
        return Err(format!("{what} {} in the key ring is not 32 bytes", k.id));
    }
    Ok(secret)
}

fn to_keys(file: &KeyFile) -> Result<Keys, String> {
    let mut keys = Vec::with_capacity(file.keys.len());
    for k in &file.keys {
        keys.push(SigningKey::new(k.id, &decode_secret(k, "signing key")?));
    }
    let signing = KeyRing::new(keys, file.current).ok_or_else(|| {
        format!(
            "the key ring's current signing key {} is not in the ring",
            file.current
        )
    })?;
    let mut data = Vec::with_capacity(file.data_keys.len());
    for k in &file.data_keys {
        data.push((k.id, decode_secret(k, "data key")?));
    }
    let lookup = file
        .lookup
        .as_deref()
        .and_then(|l| STANDARD.decode(l).ok())
        .ok_or("the key ring has no valid lookup key")?;
    let sealer = Sealer::new(&data, file.data_current, &lookup).ok_or_else(|| {
        format!(
            "the key ring's current data key {} is not in the ring",
            file.data_current
        )
    })?;
    Ok(Keys { signing, sealer })
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
