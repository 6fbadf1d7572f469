//! The `mailbeacon keys rotate|list` command: adds a signing key and makes it
//! current, or lists the keys, in the ring where the configured store keeps it
//! (the data directory's file, or the ring shared through Redis), with a
//! compare-and-set so a concurrent rotation is retried on top. Running servers
//! pick a rotation up within seconds (`serve`'s reloader).

use crate::config::{Config, KeysAction};
use crate::keyring;
use crate::store;

/// `keys rotate|list` against the configured store's key ring.
pub async fn run(config: &Config, action: KeysAction) -> Result<(), String> {
    let place = if config.redis_url.is_some() || !config.redis_cluster.is_empty() {
        "Redis".to_string()
    } else {
        config.data_dir.display().to_string()
    };
    let missing = || format!("no key ring in {place} (start the server once to create it)");
    let mut current = store::stored_keyring(config).await?.ok_or_else(missing)?;
    match action {
        KeysAction::Rotate => loop {
            let (json, id) = keyring::rotate_json(&current)?;
            if store::publish_keyring(config, Some(&current), &json).await? {
                println!("signing key {id} is now current; older keys keep verifying");
                return Ok(());
            }
            current = store::stored_keyring(config).await?.ok_or_else(missing)?;
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
