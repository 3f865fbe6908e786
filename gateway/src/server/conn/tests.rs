use std::sync::atomic::AtomicBool;

use tokio::io::AsyncReadExt;

use super::*;

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    use rustix::process::{Resource, getrlimit};
    let raised = raise_fd_limit();
    let now = getrlimit(Resource::Nofile);
    assert_eq!(
        now.current, now.maximum,
        "soft limit left below the hard one"
    );
    assert_eq!(raised, now.current);
}

#[test]
fn the_connection_cap_fits_under_the_open_file_limit() {
    assert_eq!(effective_max_connections(4096, None), 4096);
    assert_eq!(effective_max_connections(4096, Some(1 << 20)), 4096);
    assert_eq!(
        effective_max_connections(4096, Some(1024)),
        1024 - FD_RESERVE as usize
    );
    assert_eq!(effective_max_connections(4096, Some(10)), 1);
}

#[tokio::test]
async fn accepted_sockets_get_tcp_keepalive() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _client = TcpStream::connect(addr).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    configure_socket(&server).unwrap();
    let sock = socket2::SockRef::from(&server);
    assert!(sock.keepalive().unwrap());
    assert_eq!(sock.tcp_keepalive_time().unwrap(), TCP_KEEPALIVE_TIME);
    assert_eq!(
        sock.tcp_keepalive_interval().unwrap(),
        TCP_KEEPALIVE_INTERVAL
    );
    assert_eq!(sock.tcp_keepalive_retries().unwrap(), TCP_KEEPALIVE_RETRIES);
    assert!(sock.tcp_nodelay().unwrap());
}

#[tokio::test]
async fn a_silent_client_times_out_and_a_talking_one_does_not() {
    let (client, server) = tokio::io::duplex(64);
    let mut silent = FirstBytes::new(server, Duration::from_millis(50));
    let started = Instant::now();
    let mut buf = [0u8; 8];
    let err = silent.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(client);

    let (mut client, server) = tokio::io::duplex(64);
    let mut talking = FirstBytes::new(server, Duration::from_millis(50));
    tokio::io::AsyncWriteExt::write_all(&mut client, b"x")
        .await
        .unwrap();
    assert_eq!(talking.read(&mut buf).await.unwrap(), 1);
    // Once a byte came, silence is the protocol's business (its own timeouts), not ours.
    let quiet = tokio::time::timeout(Duration::from_millis(200), talking.read(&mut buf)).await;
    assert!(quiet.is_err(), "a talking client was cut off: {quiet:?}");
}

fn limits(idle_ms: u64, age_ms: u64) -> ConnLimits {
    ConnLimits {
        max_connections: 1,
        idle_timeout: Duration::from_millis(idle_ms),
        max_age: Duration::from_millis(age_ms),
    }
}

/// A connection that never ends by itself, and records that it was asked to.
async fn run(
    activity: Arc<Activity>,
    limits: ConnLimits,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> (Closed, bool, Duration) {
    let asked = Arc::new(AtomicBool::new(false));
    let flag = asked.clone();
    let started = Instant::now();
    let (closed, out) = supervise(
        std::future::pending::<()>(),
        move |_| flag.store(true, Ordering::SeqCst),
        &activity,
        &limits,
        shutdown,
        Duration::from_millis(50),
    )
    .await;
    assert!(out.is_none());
    (closed, asked.load(Ordering::SeqCst), started.elapsed())
}

#[tokio::test]
async fn an_idle_connection_is_closed_gracefully() {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let (closed, asked, took) = run(Activity::new(), limits(100, 60_000), rx).await;
    assert_eq!(closed, Closed::Idle);
    assert!(asked, "closed without a graceful shutdown first");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn a_busy_connection_is_not_idle_but_still_ages() {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let activity = Activity::new();
    let _request = activity.begin();
    let (closed, asked, took) = run(activity, limits(50, 400), rx).await;
    assert_eq!(closed, Closed::Aged);
    assert!(asked);
    assert!(took >= Duration::from_millis(400), "{took:?}");
}

#[tokio::test]
async fn shutdown_closes_gracefully() {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let activity = Activity::new();
    let _request = activity.begin();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = tx.send(true);
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    let (closed, asked, _) = run(activity, limits(60_000, 60_000), rx).await;
    assert_eq!(closed, Closed::Shutdown);
    assert!(asked);
}

#[tokio::test]
async fn a_connection_that_cancels_most_of_its_requests_is_closed() {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let activity = Activity::new();
    // Answered requests first: as many cancellations are tolerated (late answers).
    for _ in 0..150 {
        activity.begin().answered();
    }
    for _ in 0..150 {
        drop(activity.begin());
    }
    let quiet = tokio::time::timeout(
        Duration::from_millis(200),
        run(activity.clone(), limits(60_000, 60_000), rx.clone()),
    )
    .await;
    assert!(
        quiet.is_err(),
        "closed while answers outnumber cancellations"
    );
    drop(activity.begin());
    let (closed, asked, took) = run(activity, limits(60_000, 60_000), rx).await;
    assert_eq!(closed, Closed::Cancelled);
    assert!(asked);
    assert!(took < Duration::from_secs(5));
}

/// A request whose body the client cut short (a stream reset seen as a body error) is answered
/// by the server, but counts as cancelled: the rapid-reset cap must not depend on which of the
/// two the server happened to see first.
#[tokio::test]
async fn a_request_abandoned_mid_body_counts_as_cancelled_though_answered() {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let activity = Activity::new();
    for _ in 0..=MAX_CANCELLED_REQUESTS {
        let request = activity.begin();
        request.abandoned().set();
        request.answered();
    }
    let (closed, asked, took) = run(activity, limits(60_000, 60_000), rx).await;
    assert_eq!(closed, Closed::Cancelled);
    assert!(asked);
    assert!(took < Duration::from_secs(5));
}

#[tokio::test]
async fn huge_timeouts_do_not_overflow() {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let huge = ConnLimits {
        max_connections: 1,
        idle_timeout: Duration::MAX,
        max_age: Duration::MAX,
    };
    let _ = tx.send(true);
    let (closed, asked, _) = run(Activity::new(), huge, rx).await;
    assert_eq!(closed, Closed::Shutdown);
    assert!(asked);
}
