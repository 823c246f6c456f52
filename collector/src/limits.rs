//! Per-tenant ingest rate limits: a token bucket per tenant, refilled on
//! the injected clock. A tenant over its limit is told to retry later; the
//! others are not affected.
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;

use bulkhead_rules::{Limits, TenantId};

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at_nanos: i64,
}

impl Bucket {
    /// The tokens at `now_nanos`: refilled at `rate`/s since the last take,
    /// at most `burst`.
    fn refilled(&self, rate: f64, burst: f64, now_nanos: i64) -> f64 {
        let elapsed = now_nanos.saturating_sub(self.at_nanos).max(0) as f64 / 1e9;
        (self.tokens + elapsed * rate).min(burst)
    }
}

/// One kind of token bucket (records or bytes) for every tenant.
#[derive(Debug, Default)]
struct Buckets {
    all: Mutex<HashMap<TenantId, Bucket>>,
}

impl Buckets {
    /// Takes `n` at `rate`/s with room for `burst`, or says how long to
    /// wait. A take larger than the burst passes when the bucket is full
    /// (and leaves it in debt), so nothing is refused forever.
    fn take(
        &self,
        tenant: &TenantId,
        rate: u64,
        burst: u64,
        n: u64,
        now_nanos: i64,
    ) -> Result<(), Duration> {
        if rate == 0 || n == 0 {
            return Ok(());
        }
        let (rate, burst, n) = (rate as f64, burst as f64, n as f64);
        let mut all = self.all.lock();
        let b = all.entry(tenant.clone()).or_insert(Bucket {
            tokens: burst,
            at_nanos: now_nanos,
        });
        b.tokens = b.refilled(rate, burst, now_nanos);
        b.at_nanos = now_nanos.max(b.at_nanos);
        if b.tokens >= n || b.tokens >= burst {
            b.tokens -= n;
            return Ok(());
        }
        let missing = n.min(burst) - b.tokens;
        Err(Duration::from_secs_f64((missing / rate).max(0.001)))
    }

    /// Returns `n` taken for work that was then refused (never past `burst`).
    fn give_back(&self, tenant: &TenantId, burst: u64, n: u64) {
        if let Some(b) = self.all.lock().get_mut(tenant) {
            b.tokens = (b.tokens + n as f64).min(burst as f64);
        }
    }

    /// Forgets the buckets that have refilled to their burst: a full bucket
    /// is what a tenant's first request finds anyway, so an idle tenant
    /// costs nothing and comes back exactly as it left. `limits` gives each
    /// tenant's (rate, burst); a tenant without gives none and is forgotten.
    fn evict_full(
        &self,
        now_nanos: i64,
        limits: impl Fn(&TenantId) -> Option<(u64, u64)>,
    ) -> usize {
        let mut all = self.all.lock();
        let before = all.len();
        all.retain(|t, b| match limits(t) {
            Some((rate, burst)) if rate > 0 => {
                b.refilled(rate as f64, burst as f64, now_nanos) < burst as f64
            }
            _ => false,
        });
        before - all.len()
    }

    fn len(&self) -> usize {
        self.all.lock().len()
    }

    /// Refuses (with the wait) a tenant whose bucket is empty or in debt,
    /// without taking anything.
    fn check(
        &self,
        tenant: &TenantId,
        rate: u64,
        burst: u64,
        now_nanos: i64,
    ) -> Result<(), Duration> {
        if rate == 0 {
            return Ok(());
        }
        let (rate, burst) = (rate as f64, burst as f64);
        let all = self.all.lock();
        let Some(b) = all.get(tenant) else {
            return Ok(());
        };
        let tokens = b.refilled(rate, burst, now_nanos);
        if tokens >= 1.0 {
            return Ok(());
        }
        Err(Duration::from_secs_f64(((1.0 - tokens) / rate).max(0.001)))
    }
}

/// Token buckets of every tenant with a limit: records and request bytes.
#[derive(Debug, Default)]
pub struct RateLimiter {
    records: Buckets,
    bytes: Buckets,
}

/// Which of a tenant's limits refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    Records,
    Bytes,
}

impl RateLimiter {
    /// Takes `records` from `tenant`'s record bucket at `now_nanos`, or says
    /// how long to wait.
    pub fn take(
        &self,
        tenant: &TenantId,
        limits: &Limits,
        records: u64,
        now_nanos: i64,
    ) -> Result<(), Duration> {
        self.records.take(
            tenant,
            limits.records_per_second,
            limits.burst(),
            records,
            now_nanos,
        )
    }

    /// Gives back `records` taken by [`RateLimiter::take`] that were then
    /// refused (over the series limit): refused records cost no quota.
    pub fn give_back(&self, tenant: &TenantId, limits: &Limits, records: u64) {
        if limits.records_per_second > 0 && records > 0 {
            self.records.give_back(tenant, limits.burst(), records);
        }
    }

    /// Takes `bytes` (of a request as received) from `tenant`'s byte bucket.
    pub fn take_bytes(
        &self,
        tenant: &TenantId,
        limits: &Limits,
        bytes: u64,
        now_nanos: i64,
    ) -> Result<(), Duration> {
        self.bytes.take(
            tenant,
            limits.bytes_per_second,
            limits.burst_bytes(),
            bytes,
            now_nanos,
        )
    }

    /// Forgets every bucket that is full again (see `Buckets::evict_full`);
    /// `limits` gives a tenant's limits in force. Returns how many went.
    pub fn evict_idle(
        &self,
        now_nanos: i64,
        limits: impl Fn(&TenantId) -> Option<Limits>,
    ) -> usize {
        self.records.evict_full(now_nanos, |t| {
            limits(t).map(|l| (l.records_per_second, l.burst()))
        }) + self.bytes.evict_full(now_nanos, |t| {
            limits(t).map(|l| (l.bytes_per_second, l.burst_bytes()))
        })
    }

    /// Tenants with a bucket in memory (records, bytes).
    pub fn tracked(&self) -> (usize, usize) {
        (self.records.len(), self.bytes.len())
    }

    /// Admission before any work: refuses at once (with the wait) a tenant
    /// whose record or byte bucket is empty or in debt, taking nothing, so a
    /// tenant far over its limit costs no body read and no decoding.
    pub fn check(
        &self,
        tenant: &TenantId,
        limits: &Limits,
        now_nanos: i64,
    ) -> Result<(), (Over, Duration)> {
        self.records
            .check(tenant, limits.records_per_second, limits.burst(), now_nanos)
            .map_err(|w| (Over::Records, w))?;
        self.bytes
            .check(
                tenant,
                limits.bytes_per_second,
                limits.burst_bytes(),
                now_nanos,
            )
            .map_err(|w| (Over::Bytes, w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    /// Full buckets are forgotten at random moments in one limiter and kept
    /// in another; every answer of the two is the same.
    #[test]
    fn forgetting_full_buckets_changes_no_answer() {
        let l = Limits {
            records_per_second: 10,
            burst_records: 20,
            bytes_per_second: 1_000,
            burst_bytes: 3_000,
            ..Limits::default()
        };
        let (kept, forgetting) = (RateLimiter::default(), RateLimiter::default());
        let tenants: Vec<TenantId> = (0..5)
            .map(|i| TenantId::new(&format!("t{i}")).unwrap())
            .collect();
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            seed >> 33
        };
        let (mut now, mut forgotten) = (0i64, 0);
        for step in 0..20_000 {
            // mostly busy, sometimes a pause of up to ten seconds
            now += if next() % 20 == 0 {
                (next() % (10 * S as u64)) as i64
            } else {
                (next() % (S as u64 / 20)) as i64
            };
            let t = &tenants[(next() % 5) as usize];
            let (n, bytes) = (next() % 25, next() % 2_500);
            assert_eq!(
                kept.check(t, &l, now),
                forgetting.check(t, &l, now),
                "{step}"
            );
            assert_eq!(
                kept.take(t, &l, n, now),
                forgetting.take(t, &l, n, now),
                "{step}"
            );
            assert_eq!(
                kept.take_bytes(t, &l, bytes, now),
                forgetting.take_bytes(t, &l, bytes, now),
                "{step}"
            );
            if next() % 10 == 0 {
                forgotten += forgetting.evict_idle(now, |_| Some(l.clone()));
            }
        }
        assert!(forgotten > 100, "{forgotten}");
        // after a long pause every bucket is full and none is kept
        now += 3_600 * S;
        forgetting.evict_idle(now, |_| Some(l.clone()));
        assert_eq!(forgetting.tracked(), (0, 0));
        // a tenant without limits now has no bucket to keep
        let unlimited = RateLimiter::default();
        unlimited.take(&tenants[0], &l, 5, now).unwrap();
        assert_eq!(unlimited.evict_idle(now, |_| None), 1);
    }

    #[test]
    fn admission_refuses_an_empty_bucket_without_taking() {
        let rl = RateLimiter::default();
        let t = TenantId::new("a").unwrap();
        let l = Limits {
            records_per_second: 10,
            burst_records: 20,
            ..Limits::default()
        };
        assert!(rl.check(&t, &l, 0).is_ok(), "an unseen tenant is admitted");
        assert!(rl.take(&t, &l, 20, 0).is_ok());
        let (over, wait) = rl.check(&t, &l, 0).unwrap_err();
        assert_eq!(over, Over::Records);
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        // checking takes nothing: after 0.1 s one record fits
        assert!(rl.check(&t, &l, S / 10).is_ok());
        assert!(rl.take(&t, &l, 1, S / 10).is_ok());
    }

    #[test]
    fn bytes_are_limited_apart_from_records() {
        let rl = RateLimiter::default();
        let t = TenantId::new("a").unwrap();
        let l = Limits {
            bytes_per_second: 1_000,
            ..Limits::default()
        };
        assert!(rl.take_bytes(&t, &l, 2_000, 0).is_ok(), "the burst");
        let wait = rl.take_bytes(&t, &l, 500, 0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert_eq!(rl.check(&t, &l, 0).unwrap_err().0, Over::Bytes);
        // records are not limited here
        assert!(rl.take(&t, &l, 1_000_000, 0).is_ok());
        assert!(rl.take_bytes(&t, &l, 500, S / 2).is_ok());
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let rl = RateLimiter::default();
        let t = TenantId::new("a").unwrap();
        let l = Limits {
            records_per_second: 10,
            burst_records: 20,
            ..Limits::default()
        };
        assert!(rl.take(&t, &l, 20, 0).is_ok());
        let wait = rl.take(&t, &l, 10, 0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        assert!(rl.take(&t, &l, 10, S / 2).is_err());
        assert!(rl.take(&t, &l, 10, S).is_ok());
        // other tenants and unlimited tenants are untouched
        let u = TenantId::new("b").unwrap();
        assert!(rl.take(&u, &l, 20, S).is_ok());
        assert!(rl.take(&u, &Limits::default(), 1_000_000, S).is_ok());
    }

    #[test]
    fn records_given_back_can_be_taken_again_but_never_past_the_burst() {
        let rl = RateLimiter::default();
        let t = TenantId::new("a").unwrap();
        let l = Limits {
            records_per_second: 10,
            burst_records: 20,
            ..Limits::default()
        };
        assert!(rl.take(&t, &l, 20, 0).is_ok());
        assert!(rl.take(&t, &l, 5, 0).is_err());
        rl.give_back(&t, &l, 5);
        assert!(rl.take(&t, &l, 5, 0).is_ok());
        assert!(rl.take(&t, &l, 1, 0).is_err());
        rl.give_back(&t, &l, 1000);
        assert!(rl.take(&t, &l, 20, 0).is_ok());
        assert!(rl.take(&t, &l, 1, 0).is_err(), "given back past the burst");
    }

    #[test]
    fn an_oversized_request_passes_on_a_full_bucket_then_waits() {
        let rl = RateLimiter::default();
        let t = TenantId::new("a").unwrap();
        let l = Limits {
            records_per_second: 10,
            burst_records: 20,
            ..Limits::default()
        };
        assert!(rl.take(&t, &l, 50, 0).is_ok());
        let wait = rl.take(&t, &l, 1, 0).unwrap_err();
        assert!(wait.as_secs_f64() > 3.0, "{wait:?}");
        assert!(rl.take(&t, &l, 1, 6 * S).is_ok());
    }
}
