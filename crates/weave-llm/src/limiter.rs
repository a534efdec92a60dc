//! A provider's rate budget: token buckets of requests and tokens per minute, shared by
//! every step that calls the provider, adjusted from its rate-limit headers, with a shared
//! cool-down after a 429.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a provider said about its limits in a response's headers (OpenAI's
/// `x-ratelimit-*`, `retry-after`, `retry-after-ms`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct RateHeaders {
    /// Requests per minute allowed.
    pub(crate) limit_requests: Option<f64>,
    /// Requests left in the current window.
    pub(crate) remaining_requests: Option<f64>,
    /// When the request window starts again.
    pub(crate) reset_requests: Option<Duration>,
    /// Tokens per minute allowed.
    pub(crate) limit_tokens: Option<f64>,
    /// Tokens left in the current window.
    pub(crate) remaining_tokens: Option<f64>,
    /// When the token window starts again.
    pub(crate) reset_tokens: Option<Duration>,
    /// How long the provider asked us to wait (`Retry-After`).
    pub(crate) retry_after: Option<Duration>,
}

impl RateHeaders {
    /// Reads the headers that `get` finds (by lower-case name).
    pub(crate) fn read<'a>(get: impl Fn(&str) -> Option<&'a str>) -> RateHeaders {
        let num =
            |name: &str| get(name).and_then(|v| v.trim().parse::<f64>().ok()).filter(|v| v.is_finite() && *v >= 0.0);
        let dur = |name: &str| get(name).and_then(parse_reset);
        let retry_after = num("retry-after-ms")
            .map(|ms| Duration::from_secs_f64(ms / 1000.0))
            .or_else(|| num("retry-after").map(Duration::from_secs_f64));
        RateHeaders {
            limit_requests: num("x-ratelimit-limit-requests"),
            remaining_requests: num("x-ratelimit-remaining-requests"),
            reset_requests: dur("x-ratelimit-reset-requests"),
            limit_tokens: num("x-ratelimit-limit-tokens"),
            remaining_tokens: num("x-ratelimit-remaining-tokens"),
            reset_tokens: dur("x-ratelimit-reset-tokens"),
            retry_after,
        }
    }
}

/// A reset time as providers write it: `"1s"`, `"6m0s"`, `"20ms"`, `"0.5s"`, or plain seconds.
fn parse_reset(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        total += n * match &rest[..unit_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
    }
    total.is_finite().then(|| Duration::from_secs_f64(total))
}

/// One bucket: refills at `rate` per second up to `capacity` (a second's worth, at least
/// one unit), so that a budget per minute is spent evenly rather than in one burst.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: f64,
}

impl Bucket {
    fn capacity(rate: f64) -> f64 {
        rate.max(1.0)
    }
}

#[derive(Debug)]
struct State {
    /// Per minute, as configured (`requests_per_minute`, `tokens_per_minute`).
    rpm: Option<f64>,
    tpm: Option<f64>,
    /// Per minute, as the provider's headers said.
    server_rpm: Option<f64>,
    server_tpm: Option<f64>,
    requests: Bucket,
    tokens: Bucket,
    at: Instant,
    /// No request is sent before this (after a 429, or an exhausted window).
    cooldown_until: Option<Instant>,
}

impl State {
    /// Requests and tokens per second now allowed: the lower of ours and the provider's.
    fn rates(&self) -> (Option<f64>, Option<f64>) {
        let min = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        (min(self.rpm, self.server_rpm).map(|r| r / 60.0), min(self.tpm, self.server_tpm).map(|t| t / 60.0))
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        let (r, t) = self.rates();
        if let Some(r) = r {
            self.requests.level = (self.requests.level + dt * r).min(Bucket::capacity(r));
        }
        if let Some(t) = t {
            self.tokens.level = (self.tokens.level + dt * t).min(Bucket::capacity(t));
        }
    }

    /// Takes the budget of one request of about `tokens` tokens, or says how long to wait.
    fn take(&mut self, now: Instant, tokens: f64) -> Result<(), Duration> {
        if let Some(until) = self.cooldown_until {
            if until > now {
                return Err(until - now);
            }
            self.cooldown_until = None;
        }
        self.refill(now);
        let (r, t) = self.rates();
        let mut wait = 0.0f64;
        if let Some(r) = r
            && self.requests.level < 1.0
        {
            wait = wait.max((1.0 - self.requests.level) / r);
        }
        // A request larger than the whole bucket goes when the bucket is full (and leaves
        // it in debt), rather than never.
        let need = t.map(|t| tokens.min(Bucket::capacity(t)));
        if let (Some(t), Some(need)) = (t, need)
            && self.tokens.level < need
        {
            wait = wait.max((need - self.tokens.level) / t);
        }
        if wait > 0.0 {
            return Err(Duration::from_secs_f64(wait.min(60.0)).max(Duration::from_millis(1)));
        }
        if r.is_some() {
            self.requests.level -= 1.0;
        }
        if t.is_some() {
            self.tokens.level -= tokens;
        }
        Ok(())
    }
}

/// The rate budget of one provider, shared by the steps (and threads) that call it.
#[derive(Debug)]
pub(crate) struct Limiter {
    state: Mutex<State>,
}

/// The wait was cut short: the run is being cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cancelled;

impl Limiter {
    /// A budget of `rpm` requests and `tpm` tokens per minute (`None`: no limit of ours;
    /// the provider's headers may still set one).
    #[cfg(test)]
    pub(crate) fn new(rpm: Option<u64>, tpm: Option<u64>) -> Self {
        Limiter::shared_by(rpm, tpm, 1)
    }

    /// This process's share of a budget of `rpm` requests and `tpm` tokens per minute that
    /// `shares` processes spend together (the shards of a job: each gets an equal part).
    pub(crate) fn shared_by(rpm: Option<u64>, tpm: Option<u64>, shares: u32) -> Self {
        let shares = f64::from(shares.max(1));
        let rpm = rpm.filter(|r| *r > 0).map(|r| r as f64 / shares);
        let tpm = tpm.filter(|t| *t > 0).map(|t| t as f64 / shares);
        Limiter {
            state: Mutex::new(State {
                rpm,
                tpm,
                server_rpm: None,
                server_tpm: None,
                requests: Bucket { level: rpm.map_or(0.0, |r| Bucket::capacity(r / 60.0)) },
                tokens: Bucket { level: tpm.map_or(0.0, |t| Bucket::capacity(t / 60.0)) },
                at: Instant::now(),
                cooldown_until: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits (on the LLM client's runtime: a timer, not a thread) until a request of
    /// about `tokens` tokens fits the budget and no cool-down is on, then takes its share;
    /// returns how long it waited. `cancelled` is asked at least every 50 ms.
    pub(crate) async fn acquire(
        &self,
        tokens: u64,
        cancelled: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Duration, Cancelled> {
        let start = Instant::now();
        loop {
            let wait = match self.lock().take(Instant::now(), tokens as f64) {
                Ok(()) => return Ok(start.elapsed()),
                Err(w) => w,
            };
            super::client::sleep(wait, cancelled).await?;
        }
    }

    /// Puts back what a request took beyond its real cost, or takes the rest: its tokens
    /// were estimated before it was sent.
    pub(crate) fn settle(&self, estimated: u64, actual: u64) {
        let mut st = self.lock();
        let (_, t) = st.rates();
        if let Some(t) = t {
            st.tokens.level = (st.tokens.level + estimated as f64 - actual as f64).min(Bucket::capacity(t));
        }
    }

    /// Stops every request to the provider until `until` (after a 429).
    pub(crate) fn cool_down(&self, until: Instant) {
        let mut st = self.lock();
        st.cooldown_until = Some(st.cooldown_until.map_or(until, |u| u.max(until)));
    }

    /// Adjusts the budget from what the provider's headers said: its limits (when lower
    /// than ours, or when we have none), what is left (an exhausted window means waiting
    /// for its reset).
    pub(crate) fn observe(&self, h: &RateHeaders) {
        self.observe_at(h, Instant::now());
    }

    fn observe_at(&self, h: &RateHeaders, now: Instant) {
        let mut st = self.lock();
        st.refill(now);
        if let Some(l) = h.limit_requests.filter(|l| *l > 0.0) {
            if st.server_rpm.is_none() && st.rpm.is_none() {
                // A budget appears: start it full.
                st.requests.level = Bucket::capacity(l / 60.0);
            }
            st.server_rpm = Some(l);
        }
        if let Some(l) = h.limit_tokens.filter(|l| *l > 0.0) {
            if st.server_tpm.is_none() && st.tpm.is_none() {
                st.tokens.level = Bucket::capacity(l / 60.0);
            }
            st.server_tpm = Some(l);
        }
        let (r, t) = st.rates();
        if let (Some(_), Some(rem)) = (r, h.remaining_requests) {
            st.requests.level = st.requests.level.min(rem);
        }
        if let (Some(_), Some(rem)) = (t, h.remaining_tokens) {
            st.tokens.level = st.tokens.level.min(rem);
        }
        for (rem, reset) in [(h.remaining_requests, h.reset_requests), (h.remaining_tokens, h.reset_tokens)] {
            if let (Some(rem), Some(reset)) = (rem, reset)
                && rem < 1.0
            {
                let until = now + reset;
                st.cooldown_until = Some(st.cooldown_until.map_or(until, |u| u.max(until)));
            }
        }
    }

    /// The cool-down's end, if one is on (for tests and logs).
    #[cfg(test)]
    fn cooldown_until(&self) -> Option<Instant> {
        self.lock().cooldown_until
    }

    #[cfg(test)]
    fn take_at(&self, now: Instant, tokens: u64) -> Result<(), Duration> {
        self.lock().take(now, tokens as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(l: &Limiter) -> Instant {
        l.lock().at
    }

    #[test]
    fn requests_per_minute_are_spent_evenly() {
        // 120 a minute: 2 a second, a burst of 2, then one every half second.
        let l = Limiter::new(Some(120), None);
        let t0 = at(&l);
        assert!(l.take_at(t0, 0).is_ok());
        assert!(l.take_at(t0, 0).is_ok());
        let wait = l.take_at(t0, 0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert!(l.take_at(t0 + Duration::from_millis(500), 0).is_ok());
        assert!(l.take_at(t0 + Duration::from_millis(600), 0).is_err());
        // A long pause does not bank more than a second's worth.
        let later = t0 + Duration::from_secs(60);
        assert!(l.take_at(later, 0).is_ok());
        assert!(l.take_at(later, 0).is_ok());
        assert!(l.take_at(later, 0).is_err());
    }

    #[test]
    fn a_shard_of_a_job_spends_its_share_of_the_budget() {
        // 480 a minute over 4 shards: each spends 120, one every half second.
        let l = Limiter::shared_by(Some(480), None, 4);
        let t0 = at(&l);
        assert!(l.take_at(t0, 0).is_ok());
        assert!(l.take_at(t0, 0).is_ok());
        let wait = l.take_at(t0, 0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn tokens_are_estimated_then_settled() {
        // 6,000 tokens a minute: 100 a second.
        let l = Limiter::new(None, Some(6000));
        let t0 = at(&l);
        assert!(l.take_at(t0, 80).is_ok());
        assert!(l.take_at(t0, 80).is_err(), "20 left");
        // The request used 30, not 80: the 50 come back.
        l.settle(80, 30);
        assert!(l.take_at(t0, 70).is_ok());
        // A request larger than the bucket waits for a full bucket, then goes into debt.
        let t1 = t0 + Duration::from_secs(5);
        assert!(l.take_at(t1, 500).is_ok());
        let wait = l.take_at(t1, 10).unwrap_err();
        assert!((wait.as_secs_f64() - 4.1).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn no_budget_means_no_wait() {
        let l = Limiter::new(None, None);
        let t0 = at(&l);
        for _ in 0..1000 {
            assert!(l.take_at(t0, 1_000_000).is_ok());
        }
    }

    #[test]
    fn headers_set_a_budget_and_an_exhausted_window_cools_down() {
        let l = Limiter::new(None, None);
        let t0 = at(&l);
        let h = RateHeaders::read(|name| match name {
            "x-ratelimit-limit-requests" => Some("60"),
            "x-ratelimit-remaining-requests" => Some("0"),
            "x-ratelimit-reset-requests" => Some("6m0s"),
            _ => None,
        });
        assert_eq!(h.reset_requests, Some(Duration::from_secs(360)));
        l.observe_at(&h, t0);
        assert_eq!(l.cooldown_until(), Some(t0 + Duration::from_secs(360)));
        assert!(l.take_at(t0 + Duration::from_secs(359), 0).is_err());
        assert!(l.take_at(t0 + Duration::from_secs(361), 0).is_ok());
        // Then one a second, the provider's 60 a minute.
        assert!(l.take_at(t0 + Duration::from_secs(361), 0).is_err());
    }

    #[test]
    fn a_lower_provider_limit_wins_over_ours() {
        let l = Limiter::new(Some(6000), None);
        let t0 = at(&l);
        l.observe_at(&RateHeaders { limit_requests: Some(60.0), ..RateHeaders::default() }, t0);
        assert!(l.take_at(t0, 0).is_ok());
        let wait = l.take_at(t0, 0).unwrap_err();
        assert!(wait >= Duration::from_millis(999), "{wait:?}");
    }

    #[test]
    fn a_cool_down_holds_every_request() {
        let l = Limiter::new(None, None);
        let t0 = at(&l);
        l.cool_down(t0 + Duration::from_secs(2));
        l.cool_down(t0 + Duration::from_secs(1));
        assert_eq!(l.take_at(t0, 0), Err(Duration::from_secs(2)), "the later end wins");
        assert!(l.take_at(t0 + Duration::from_secs(2), 0).is_ok());
    }

    #[test]
    fn retry_after_and_resets_are_read_in_every_form() {
        let h = RateHeaders::read(|n| (n == "retry-after").then_some("3"));
        assert_eq!(h.retry_after, Some(Duration::from_secs(3)));
        let h = RateHeaders::read(|n| match n {
            "retry-after" => Some("3"),
            "retry-after-ms" => Some("250"),
            _ => None,
        });
        assert_eq!(h.retry_after, Some(Duration::from_millis(250)), "the finer one wins");
        assert_eq!(parse_reset("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(parse_reset("1m30.5s"), Some(Duration::from_millis(90_500)));
        assert_eq!(parse_reset("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_reset("soon"), None);
        assert_eq!(RateHeaders::read(|n| (n == "retry-after").then_some("Wed, 21 Oct 2015")).retry_after, None);
    }

    #[test]
    fn waiting_can_be_cancelled() {
        let l = Limiter::new(None, None);
        l.cool_down(Instant::now() + Duration::from_secs(3600));
        let rt = crate::client::runtime().unwrap();
        assert_eq!(rt.block_on(l.acquire(0, &|| true)), Err(Cancelled));
    }
}
