//! Redis node ids (issue #11, finding 13): every starting process claims a node id
//! nobody else holds, so event ids from two live processes never collide, however
//! many processes have started before.

mod support;

use std::collections::HashSet;

use mailbeacon::store::redis::conn::{connect, Target};
use mailbeacon::store::redis::node;

#[tokio::test]
async fn node_ids_are_never_shared_by_live_processes() {
    let server = support::redis::RedisServer::start();
    let target = Target::Single(server.url());
    let mut c = connect(&target).await.unwrap();

    // Two (here eight) processes starting at the same moment get different ids.
    let together = futures_util::future::join_all((0..8).map(|_| {
        let mut c = c.clone();
        async move { node::claim(&mut c, 60_000).await.unwrap() }
    }))
    .await;
    let mut live: HashSet<u64> = together.iter().map(|n| n.id).collect();
    assert_eq!(live.len(), 8);

    // 1,030 starts in all, none stopping: each of the first 1,024 gets an id no
    // live process holds; after that the start fails instead of reusing one.
    let mut held = together;
    let mut refused = 0;
    for _ in 8..1030 {
        match node::claim(&mut c, 60_000).await {
            Ok(n) => {
                assert!(live.insert(n.id), "node id {} reused while live", n.id);
                assert!(n.id < node::NODE_IDS);
                held.push(n);
            }
            Err(_) => refused += 1,
        }
    }
    assert_eq!(live.len(), 1024);
    assert_eq!(refused, 6);

    // A process that stops frees its id for the next start.
    let gone = held.swap_remove(100);
    node::release(&mut c, &gone).await.unwrap();
    let next = node::claim(&mut c, 60_000).await.unwrap();
    assert_eq!(next.id, gone.id);
    // The stopped process's claim can no longer be renewed over the new holder.
    assert!(!node::renew(&mut c, &gone, 60_000).await.unwrap());
    assert!(node::renew(&mut c, &next, 60_000).await.unwrap());

    // A crashed process (no renewal) frees its id once the claim expires.
    for n in &held[..3] {
        node::release(&mut c, n).await.unwrap();
    }
    let short = node::claim(&mut c, 50).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut taken = HashSet::new();
    for _ in 0..3 {
        taken.insert(node::claim(&mut c, 60_000).await.unwrap().id);
    }
    assert!(taken.contains(&short.id));
}
