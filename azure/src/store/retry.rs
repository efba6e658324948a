//! The retry loop as a state machine: each failed attempt goes in, the wait before
//! the next one (or the final error) comes out. Time and jitter are the caller's,
//! so the native host (tokio) and the store component (wasi clocks) drive the same
//! decisions, and tests drive it without sleeping.

use std::time::Duration;

use super::CallError;
use crate::response::{self, RetryPolicy};

/// The attempts of one call.
#[derive(Clone, Debug)]
pub struct Attempts {
    policy: RetryPolicy,
    failures: u32,
    maybe_applied: bool,
}

impl Attempts {
    pub fn new(policy: &RetryPolicy) -> Attempts {
        Attempts {
            policy: policy.clone(),
            failures: 0,
            maybe_applied: false,
        }
    }

    /// After a failed attempt: the wait before the next try, or the error to give
    /// up with. Transient answers (408, 429, 5xx) and lost connections are tried
    /// again; other refusals and the host's refusals are final. `jitter` is a
    /// random number in `[0, 1)`; `retry_after` is the service's `Retry-After`.
    pub fn failed(
        &mut self,
        error: CallError,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Result<Duration, CallError> {
        let transient = match &error {
            CallError::Service(e) => response::is_retryable_status(e.status),
            CallError::Unreachable(_) => true,
            CallError::Refused(_) => false,
        };
        if !transient {
            return Err(error);
        }
        match self.policy.delay(self.failures, retry_after, jitter) {
            Some(delay) => {
                self.failures += 1;
                // A lost answer or a 5xx: that attempt may still have been applied.
                self.maybe_applied = true;
                Ok(delay)
            }
            None => Err(error),
        }
    }

    /// Whether an earlier attempt failed in a way that may still have been applied.
    pub fn maybe_applied(&self) -> bool {
        self.maybe_applied
    }
}

/// A non-success answer as the error it stands for, with the service's
/// `Retry-After`.
pub fn refusal(
    status: u16,
    headers: &http::HeaderMap,
    body: &[u8],
) -> (CallError, Option<Duration>) {
    (
        CallError::Service(response::error(status, headers, body)),
        response::retry_after(headers),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(status: u16) -> CallError {
        refusal(status, &http::HeaderMap::new(), b"").0
    }

    #[test]
    fn transient_failures_are_retried_until_the_policy_gives_up() {
        let policy = RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let mut attempts = Attempts::new(&policy);
        assert!(!attempts.maybe_applied());
        assert_eq!(
            attempts.failed(service(503), None, 0.5).unwrap(),
            Duration::from_millis(50)
        );
        assert!(attempts.maybe_applied());
        let lost = CallError::Unreachable("reset".into());
        assert_eq!(
            attempts.failed(lost, None, 1.0).unwrap(),
            Duration::from_millis(200)
        );
        assert!(attempts.failed(service(500), None, 0.5).is_err());
    }

    #[test]
    fn refusals_are_final_and_retry_after_is_honoured() {
        let mut attempts = Attempts::new(&RetryPolicy::default());
        assert!(attempts.failed(service(404), None, 0.5).is_err());
        assert!(attempts.failed(service(412), None, 0.5).is_err());
        let denied = CallError::Refused("denied".into());
        assert!(attempts.failed(denied, None, 0.5).is_err());
        assert!(!attempts.maybe_applied());
        let asked = Some(Duration::from_secs(2));
        assert_eq!(
            attempts.failed(service(429), asked, 0.0).unwrap(),
            Duration::from_secs(2)
        );
    }
}
