//! The one wait's deadline is a window without progress: a new reason is progress however
//! long the work; a reason seen before is not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rollout_core::{
    ErrorClass, Health,
    probe::probe_fn,
    wait::{WaitError, wait_until},
};

const POLL: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(1));

#[tokio::test(start_paused = true)]
async fn work_that_keeps_moving_is_not_cut_off_however_long_it_is() {
    // 1,000 replicas come back one every 10 s: 10,000 s against a 60 s deadline.
    let t0 = tokio::time::Instant::now();
    let probe = probe_fn(|| async move {
        let left = 1000u64.saturating_sub(t0.elapsed().as_secs() / 10);
        Ok::<_, std::io::Error>(if left == 0 {
            Health::Healthy
        } else {
            Health::Waiting(format!("{left} replicas not serving yet"))
        })
    });
    let r = wait_until(
        &probe,
        Duration::from_secs(60),
        POLL,
        |_| ErrorClass::Fatal,
        |_| {},
    )
    .await;
    assert!(r.is_ok(), "{r:?}");
    assert!(t0.elapsed() >= Duration::from_secs(9990));
}

#[tokio::test(start_paused = true)]
async fn a_reason_that_flips_between_two_states_is_no_progress() {
    let calls = AtomicU64::new(0);
    let probe = probe_fn(|| {
        let n = calls.fetch_add(1, Ordering::Relaxed);
        async move {
            Ok::<_, std::io::Error>(Health::Waiting(
                if n.is_multiple_of(2) {
                    "a leader is moving"
                } else {
                    "a leader moved"
                }
                .to_string(),
            ))
        }
    });
    let t0 = tokio::time::Instant::now();
    let r = wait_until(
        &probe,
        Duration::from_secs(60),
        POLL,
        |_| ErrorClass::Fatal,
        |_| {},
    )
    .await;
    assert!(matches!(r, Err(WaitError::Timeout(_))), "{r:?}");
    // The two reasons are new once each; after that the window runs out.
    assert!(
        t0.elapsed() <= Duration::from_secs(62),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn work_that_stops_moving_is_caught_after_one_window_naming_the_last_reason() {
    let t0 = tokio::time::Instant::now();
    let probe = probe_fn(|| async move {
        let left = 100u64.saturating_sub(t0.elapsed().as_secs() / 10).max(40);
        Ok::<_, std::io::Error>(Health::Waiting(format!("{left} replicas not serving yet")))
    });
    let r = wait_until(
        &probe,
        Duration::from_secs(60),
        POLL,
        |_| ErrorClass::Fatal,
        |_| {},
    )
    .await;
    let Err(WaitError::Timeout(why)) = r else {
        panic!("{r:?}")
    };
    assert!(
        why.contains("no progress") && why.contains("40 replicas"),
        "{why}"
    );
    // 600 s of progress, then one 60 s window.
    let took = t0.elapsed().as_secs();
    assert!((655..=665).contains(&took), "{took}");
}
