//! One connection type for a single Redis node and for Redis Cluster.
//!
//! `Conn` wraps redis-rs's `ConnectionManager` (a multiplexed connection that
//! reconnects by itself) or its async cluster connection (which follows the slot
//! map and MOVED redirections), and implements `ConnectionLike` by delegating, so
//! the rest of the backend issues commands without knowing which it has.
//!
//! Cluster rule kept by every caller: a pipeline or script touches keys of one hash
//! tag only (redis-rs refuses pipelines that cross slots).

use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::store::{Result, StoreError};

/// Where Redis is: one node or Cluster seed nodes.
#[derive(Clone, Debug)]
pub enum Target {
    Single(String),
    Cluster(Vec<String>),
}

#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Connects; fails if Redis cannot be reached within a few seconds.
pub async fn connect(target: &Target) -> Result<Conn> {
    let fail = |e: ::redis::RedisError| StoreError::Backend(format!("redis: {e}"));
    match target {
        Target::Single(url) => {
            let client = ::redis::Client::open(url.as_str()).map_err(fail)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(1)))
                // A command that gets no answer fails after this; the recorder's
                // own, shorter, limit applies to the hot path.
                .set_response_timeout(Some(Duration::from_secs(10)))
                .set_number_of_retries(3)
                .set_max_delay(Duration::from_millis(500));
            let cm = ConnectionManager::new_with_config(client, config)
                .await
                .map_err(fail)?;
            Ok(Conn::Single(cm))
        }
        Target::Cluster(seeds) => {
            let client = ClusterClientBuilder::new(seeds.iter().map(String::as_str))
                .connection_timeout(Duration::from_secs(1))
                .response_timeout(Duration::from_secs(10))
                .retries(3)
                .build()
                .map_err(fail)?;
            let c = client.get_async_connection().await.map_err(fail)?;
            Ok(Conn::Cluster(c))
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
