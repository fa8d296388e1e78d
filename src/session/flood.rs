//! Flood control for one client: a token bucket that delays lines instead of dropping them.
//!
//! Owns the arithmetic only — tokens, refill, when the next line may go — with the clock passed
//! in, so it is tested without sleeping. The session decides what waits and what is refused.
//! A client may send `burst` lines at once; after that, lines leave at `per_second`. Nothing is
//! banned: a client that stops sending gets its burst back.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TokenBucket {
    burst: f64,
    per_second: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    pub fn new(burst: u32, per_second: f64, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket { burst, per_second, tokens: burst, refilled_at: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.refilled_at = now;
    }

    /// Takes a token if one is there: `true` means the line may go now.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token will be there.
    pub fn next_token_at(&self, now: Instant) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        let already = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        let wait = (missing / self.per_second - already).max(0.0);
        now + Duration::from_secs_f64(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_then_the_rate_applies() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 2.0, start);
        for _ in 0..10 {
            assert!(bucket.try_take(start));
        }
        assert!(!bucket.try_take(start));
        assert_eq!(bucket.next_token_at(start), start + Duration::from_millis(500));
        assert!(!bucket.try_take(start + Duration::from_millis(400)));
        assert!(bucket.try_take(start + Duration::from_millis(500)));
        assert!(!bucket.try_take(start + Duration::from_millis(600)));
    }

    #[test]
    fn a_quiet_client_gets_its_burst_back_and_no_more() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(3, 1.0, start);
        for _ in 0..3 {
            assert!(bucket.try_take(start));
        }
        let later = start + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(bucket.try_take(later));
        }
        assert!(!bucket.try_take(later));
    }

    #[test]
    fn sixty_pasted_lines_all_go_within_thirty_seconds() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 2.0, start);
        let mut now = start;
        let mut sent = 0;
        while sent < 60 {
            if bucket.try_take(now) {
                sent += 1;
            } else {
                now = bucket.next_token_at(now);
            }
        }
        assert!(now - start <= Duration::from_secs(25), "took {:?}", now - start);
    }
}
