//! The `mailbeacon keys rotate|list` command: adds a signing key and makes it
//! current, or lists the keys, in the data directory's ring file (`in_files`) or
//! in the ring shared through Redis (`in_redis`, compare-and-set). Running
//! servers pick a rotation up within seconds (`serve`'s reloader).

use crate::config::{Config, KeysAction};
use crate::keyring;
use crate::store::redis as redis_store;
use crate::store::redis::conn::{self, Target};

/// `keys rotate|list` against the ring file in the data directory.
pub fn in_files(config: &Config, action: KeysAction) -> Result<(), String> {
    let dir = &config.data_dir;
    if !keyring::path(dir).exists() {
        return Err(format!(
            "no key ring in {} (start the server once to create it)",
            dir.display()
        ));
    }
    match action {
        KeysAction::Rotate => {
            let id = keyring::rotate(dir)?;
            println!("signing key {id} is now current; older keys keep verifying");
        }
        KeysAction::List => {
            for k in keyring::list(dir)? {
                let mark = if k.current { " (current)" } else { "" };
                println!("{}\t{}{}", k.id, k.created, mark);
            }
        }
    }
    Ok(())
}

/// `keys rotate|list` against the ring stored in Redis.
pub async fn in_redis(target: &Target, action: KeysAction) -> Result<(), String> {
    let mut c = conn::connect(target).await.map_err(|e| e.to_string())?;
    let missing = || "no key ring in Redis (start the server once to create it)".to_string();
    let mut current = redis_store::get_keyring(&mut c)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(missing)?;
    match action {
        KeysAction::Rotate => loop {
            let (json, id) = keyring::rotate_json(&current)?;
            // Compare-and-set: a concurrent rotation elsewhere is retried on top.
            if redis_store::put_keyring(&mut c, Some(&current), &json)
                .await
                .map_err(|e| e.to_string())?
            {
                println!("signing key {id} is now current; older keys keep verifying");
                return Ok(());
            }
            current = redis_store::get_keyring(&mut c)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(missing)?;
        },
        KeysAction::List => {
            for k in keyring::list_json(&current)? {
                let mark = if k.current { " (current)" } else { "" };
                println!("{}\t{}{}", k.id, k.created, mark);
            }
            Ok(())
        }
    }
}
