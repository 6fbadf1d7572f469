//! The store backends a test can run against: the embedded store, a single Redis
//! node and a 3-master Redis Cluster, each real and private to the test. A test
//! written once over `Backend` runs on all three (see `tests/privacy.rs`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use super::redis::{RedisCluster, RedisServer};
use super::{Server, TempDir};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Embedded,
    Redis,
    Cluster,
}

pub struct Backend {
    pub kind: Kind,
    redis: Option<RedisServer>,
    cluster: Option<RedisCluster>,
    tmp: TempDir,
}

impl Backend {
    pub fn new(kind: Kind) -> Backend {
        Backend {
            kind,
            redis: (kind == Kind::Redis).then(RedisServer::start),
            cluster: (kind == Kind::Cluster).then(RedisCluster::start),
            tmp: TempDir::new("backend"),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// The environment that points mailbeacon (server or CLI) at this backend.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![(
            "MAILBEACON_DATA_DIR".to_string(),
            self.data_dir().display().to_string(),
        )];
        if let Some(r) = &self.redis {
            env.push(("MAILBEACON_REDIS_URL".into(), r.url()));
        }
        if let Some(c) = &self.cluster {
            env.push(("MAILBEACON_REDIS_CLUSTER".into(), c.seeds()));
        }
        env
    }

    /// A server on this backend, with `extra` settings.
    pub fn server(&self, extra: &[(&str, &str)]) -> Server {
        let env = self.env();
        let mut all: Vec<(&str, &str)> = env
            .iter()
            .filter(|(k, _)| k != "MAILBEACON_DATA_DIR")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        all.extend_from_slice(extra);
        Server::start_in(&self.data_dir(), &all)
    }

    fn nodes(&self) -> Vec<&RedisServer> {
        match (&self.redis, &self.cluster) {
            (Some(r), _) => vec![r],
            (_, Some(c)) => c.nodes.iter().collect(),
            _ => Vec::new(),
        }
    }

    /// Everything stored: every file of the data directory, and with Redis every
    /// key and every value on every node.
    pub fn raw(&self) -> Vec<u8> {
        let mut out = Vec::new();
        files(&self.data_dir(), &mut out);
        for n in self.nodes() {
            for key in n.cli(&["--scan"]).lines().filter(|k| !k.is_empty()) {
                out.extend_from_slice(key.as_bytes());
                out.push(b'\n');
                let value = match n.cli(&["TYPE", key]).trim() {
                    "string" => n.cli(&["--raw", "GET", key]),
                    "hash" => n.cli(&["--raw", "HGETALL", key]),
                    "set" => n.cli(&["--raw", "SMEMBERS", key]),
                    "zset" => n.cli(&["--raw", "ZRANGE", key, "0", "-1", "WITHSCORES"]),
                    "list" => n.cli(&["--raw", "LRANGE", key, "0", "-1"]),
                    "stream" => n.cli(&["--raw", "XRANGE", key, "-", "+"]),
                    other => panic!("unexpected Redis type {other:?} for {key}"),
                };
                out.extend_from_slice(value.as_bytes());
                out.push(b'\n');
            }
        }
        out
    }

    /// The key ring's JSON, wherever this backend keeps it.
    pub fn keyring(&self) -> String {
        match self.nodes().as_slice() {
            [] => std::fs::read_to_string(self.data_dir().join("keyring.json")).expect("keyring"),
            nodes => nodes
                .iter()
                .map(|n| n.cli(&["--raw", "GET", "mb:{g}:keyring"]))
                .find(|v| v.trim_start().starts_with('{'))
                .expect("the key ring in Redis"),
        }
    }
}

fn files(dir: &Path, out: &mut Vec<u8>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if let Ok(b) = std::fs::read(&p) {
            out.extend(b);
        }
    }
}
