//! Real Redis servers for the tests: a single node, or a 3-master Redis Cluster,
//! each server on a free port with its own temp directory, killed on drop.
//!
//! A missing `redis-server` fails loudly (never skips): the README test command
//! installs it. Servers run with `appendonly yes` and `appendfsync always`, the
//! configuration the README recommends.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, TempDir};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    cluster: bool,
    dir: TempDir,
}

impl RedisServer {
    /// A single node.
    pub fn start() -> RedisServer {
        RedisServer::start_node(false)
    }

    fn start_node(cluster: bool) -> RedisServer {
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            cluster,
            dir: TempDir::new("redis"),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", ""])
            .args(["--protected-mode", "no"])
            .args(["--logfile", "redis.log"]);
        if self.cluster {
            cmd.args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "5000"]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server is required for the Redis tests: run the README test command (./scripts/test.sh), which installs it",
            );
        self.child = Some(child);
        let t0 = Instant::now();
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "redis-server on port {} did not start:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Runs `redis-cli` against this server; returns its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is required for the Redis tests (package redis-tools)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kills the server at once (SIGKILL): what the AOF had is what survives.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3-master Redis Cluster without replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_node(true)).collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is required for the Redis Cluster tests");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let t0 = Instant::now();
        for n in &nodes {
            while !n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "the cluster did not become ready"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    /// The seed list, as `MAILBEACON_REDIS_CLUSTER` takes it.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every key on every node.
    pub fn all_keys(&self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for k in n.cli(&["--scan"]).lines().filter(|l| !l.is_empty()) {
                out.push((i, k.to_string()));
            }
        }
        out
    }
}
