//! The Redis pool against the real Redis. A connection is handed out without a check while it
//! answers (one round trip per call, not two); one that Redis dropped fails the call that finds
//! it, and is checked and replaced before its next use.

use deadpool_redis::redis;

use crate::harness::*;

async fn client_id(conn: &mut adapters::store::Connection) -> redis::RedisResult<i64> {
    redis::cmd("CLIENT").arg("ID").query_async(conn).await
}

#[tokio::test]
async fn a_connection_redis_dropped_fails_one_call_and_is_replaced() {
    require_infrastructure();
    let mut settings = test_settings();
    settings.redis.pool_size = 1;
    let pool = adapters::store::pool(&settings.redis).unwrap();
    let id = client_id(&mut pool.get().await.unwrap()).await.unwrap();
    // Handed out again unchecked: the same connection.
    assert_eq!(client_id(&mut pool.get().await.unwrap()).await.unwrap(), id);

    // Redis drops it, as a restart or a network fault would.
    let mut other = redis::Client::open(settings.redis.url.expose()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).query_async(&mut other).await.unwrap();

    // Used a moment ago, so not checked: the call finds it dropped and fails (the caller retries
    // or answers 503) …
    let failed = client_id(&mut pool.get().await.unwrap()).await;
    assert!(failed.is_err(), "a call on a connection Redis dropped answered {failed:?}");
    // … and the pool checks it before its next use, finds it dead and makes a new one.
    let replaced = client_id(&mut pool.get().await.unwrap()).await.expect("a call after a dropped connection succeeds");
    assert_ne!(replaced, id);
}
