//! Per-identity limit on writes: a token bucket for each caller, so one identity (or a
//! stolen credential) cannot churn replica counts faster than `--writes-per-minute`
//! after a burst of `--write-burst`. Only writes that passed validation and
//! authorization spend from it, so the map holds at most the identities any policy
//! bound since start (a few bytes each, kept until restart, also after a policy reload
//! drops the identity). Each server replica counts on its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::Error;
use crate::access::ClientIdentity;

pub struct WriteLimiter {
    /// Refills per minute.
    per_minute: u32,
    /// Bucket size.
    burst: u32,
    buckets: Mutex<HashMap<ClientIdentity, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl WriteLimiter {
    /// Bursts of up to `burst` writes, then one every `60 / per_minute` seconds.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            burst: burst.max(1),
            buckets: Mutex::default(),
        }
    }

    /// Takes one write from `identity`'s bucket at `now`, or says when to retry.
    pub fn acquire(&self, identity: &ClientIdentity, now: Instant) -> Result<(), Error> {
        let (size, rate) = (f64::from(self.burst), f64::from(self.per_minute) / 60.0);
        // A panic while holding the lock leaves consistent (if stale) buckets.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = buckets.entry(identity.clone()).or_insert(Bucket {
            tokens: size,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(size);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        Err(Error::RateLimited {
            identity: identity.clone(),
            per_minute: self.per_minute,
            retry_after: Duration::from_secs_f64((1.0 - bucket.tokens) / rate),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str) -> ClientIdentity {
        ClientIdentity::CommonName(name.into())
    }

    #[test]
    fn a_burst_up_to_the_limit_is_allowed_then_writes_are_refused() {
        let limiter = WriteLimiter::new(3, 3);
        let (pipeline, start) = (identity("pipeline"), Instant::now());
        for _ in 0..3 {
            assert!(limiter.acquire(&pipeline, start).is_ok());
        }
        let refused = limiter
            .acquire(&pipeline, start)
            .expect_err("over the limit");
        assert!(matches!(&refused, Error::RateLimited { .. }));
        assert_eq!(
            refused.to_string(),
            "identity cn:pipeline exceeded 3 writes per minute; retry in 20.0s"
        );
    }

    #[test]
    fn the_bucket_refills_over_time() {
        let limiter = WriteLimiter::new(60, 60);
        let (pipeline, start) = (identity("pipeline"), Instant::now());
        for _ in 0..60 {
            assert!(limiter.acquire(&pipeline, start).is_ok());
        }
        assert!(limiter.acquire(&pipeline, start).is_err());
        let later = start + Duration::from_millis(500);
        assert!(limiter.acquire(&pipeline, later).is_err(), "half a token");
        let second = start + Duration::from_secs(1);
        assert!(limiter.acquire(&pipeline, second).is_ok(), "one per second");
        assert!(limiter.acquire(&pipeline, second).is_err());
        // Idle time refills the burst, but no further.
        let idle = start + Duration::from_secs(3600);
        for _ in 0..60 {
            assert!(limiter.acquire(&pipeline, idle).is_ok());
        }
        assert!(limiter.acquire(&pipeline, idle).is_err());
    }

    #[test]
    fn the_burst_is_set_apart_from_the_rate() {
        let limiter = WriteLimiter::new(60, 2);
        let (pipeline, start) = (identity("pipeline"), Instant::now());
        assert!(limiter.acquire(&pipeline, start).is_ok());
        assert!(limiter.acquire(&pipeline, start).is_ok());
        assert!(limiter.acquire(&pipeline, start).is_err(), "burst of two");
        let idle = start + Duration::from_secs(3600);
        for _ in 0..2 {
            assert!(limiter.acquire(&pipeline, idle).is_ok());
        }
        assert!(
            limiter.acquire(&pipeline, idle).is_err(),
            "idle time refills the burst, not the rate"
        );
        let second = idle + Duration::from_secs(1);
        assert!(limiter.acquire(&pipeline, second).is_ok(), "one per second");
    }

    #[test]
    fn identities_have_their_own_buckets() {
        let limiter = WriteLimiter::new(1, 1);
        let now = Instant::now();
        assert!(limiter.acquire(&identity("alice"), now).is_ok());
        assert!(limiter.acquire(&identity("alice"), now).is_err());
        assert!(limiter.acquire(&identity("bob"), now).is_ok());
    }
}
