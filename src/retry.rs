//! Retries with exponential backoff and jitter, for failures that a second
//! try may cure: an unreachable mount or remote, `EAGAIN`/`EBUSY`/`EINTR`, a
//! timed-out or temporarily failing `rclone` call, a busy lock.
//!
//! Which failures are transient is decided here, once, by error code
//! ([`is_transient`]), not by each caller: permission denied, corrupt data and
//! bad configuration are permanent and are never retried (a retry would only
//! delay the same answer). The delay before attempt `n + 1` is "equal jitter":
//! half of `min(max, base · 2^(n-1))` fixed plus a random part up to the other
//! half, so delays grow from one attempt to the next while concurrent runs
//! (several machines syncing to one NAS) spread out.
//!
//! Every attempt is recorded ([`Attempt`]) so the envelope can report how many
//! were made and why, and printed on stderr with `--verbose`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::Error;

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Print each failed attempt on stderr (`--verbose`).
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

/// Default number of attempts (the first try included).
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// Default delay before the second attempt.
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_secs(1);
/// Default cap on one delay.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, at least 1.
    pub attempts: u32,
    /// Delay before the second attempt (before jitter).
    pub base_delay: Duration,
    /// No single delay is longer than this.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: DEFAULT_ATTEMPTS,
            base_delay: DEFAULT_BASE_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
        }
    }
}

/// One failed attempt, as reported in the envelope.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Attempt {
    /// 1-based attempt number.
    pub attempt: u32,
    /// Error code of the failure.
    pub code: String,
    /// What failed.
    pub message: String,
    /// Whether it was judged transient (and so retried when attempts remained).
    pub retryable: bool,
    /// How long this attempt took.
    pub duration_ms: u64,
    /// Delay slept before the next attempt (0 when none followed).
    pub delay_ms: u64,
}

/// The outcome of [`retry`]: the value or the last error, plus every failed attempt.
#[derive(Debug)]
pub struct Retried<T> {
    /// The final result.
    pub result: Result<T, Error>,
    /// Attempts made in all (successful one included).
    pub attempts: u32,
    /// The failed attempts, in order.
    pub failures: Vec<Attempt>,
}

/// Error codes a retry may cure. Everything else is permanent.
pub fn is_transient(err: &Error) -> bool {
    matches!(
        err.code,
        "busy"
            | "lock_busy"
            | "external_unreachable"
            | "rclone_timeout"
            | "rclone_temporary"
            | "timed_out"
    ) || (err.code == "io_error" && err.retryable)
}

impl RetryPolicy {
    /// Delay (before jitter) after failed attempt `n` (1-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// The jittered delay after failed attempt `n`: between half and all of [`Self::backoff`].
    pub fn jittered(&self, n: u32) -> Duration {
        let full = self.backoff(n);
        let half = full / 2;
        let mut r = [0u8; 8];
        // No randomness (very early boot): fall back to the full delay, which is still correct.
        let frac = if getrandom::fill(&mut r).is_ok() {
            (u64::from_le_bytes(r) >> 11) as f64 / (1u64 << 53) as f64
        } else {
            1.0
        };
        half + (full - half).mul_f64(frac)
    }
}

/// Run `op` up to `policy.attempts` times while it fails with a transient
/// error, sleeping a growing, jittered delay between attempts. `what` names
/// the operation in `--verbose` messages.
pub fn retry<T>(
    policy: &RetryPolicy,
    what: &str,
    mut op: impl FnMut(u32) -> Result<T, Error>,
) -> Retried<T> {
    let attempts = policy.attempts.max(1);
    let mut failures = Vec::new();
    let mut n = 1;
    loop {
        let started = Instant::now();
        match op(n) {
            Ok(v) => {
                return Retried {
                    result: Ok(v),
                    attempts: n,
                    failures,
                }
            }
            Err(mut e) => {
                let transient = is_transient(&e);
                e.retryable = transient;
                let again = transient && n < attempts;
                let delay = if again {
                    policy.jittered(n)
                } else {
                    Duration::ZERO
                };
                if VERBOSE.load(Ordering::Relaxed) {
                    eprintln!(
                        "{what}: attempt {n}/{attempts} failed ({}): {}{}",
                        e.code,
                        e.message,
                        if again {
                            format!("; retrying in {} ms", delay.as_millis())
                        } else if transient {
                            "; no attempts left".to_string()
                        } else {
                            "; not retried (permanent)".to_string()
                        }
                    );
                }
                failures.push(Attempt {
                    attempt: n,
                    code: e.code.to_string(),
                    message: e.message.clone(),
                    retryable: transient,
                    duration_ms: started.elapsed().as_millis() as u64,
                    delay_ms: delay.as_millis() as u64,
                });
                if !again {
                    return Retried {
                        result: Err(e),
                        attempts: n,
                        failures,
                    };
                }
                std::thread::sleep(delay);
                n += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::ExitCode;

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(4),
            max_delay: Duration::from_millis(100),
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            attempts: 10,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(5),
        };
        let got: Vec<u64> = (1..=5).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 5, 5]);
        assert_eq!(p.backoff(200), Duration::from_secs(5));
        for n in 1..=5 {
            let j = p.jittered(n);
            assert!(j >= p.backoff(n) / 2 && j <= p.backoff(n), "{j:?}");
        }
    }

    #[test]
    fn transient_failure_is_retried_until_success() {
        let r = retry(&fast(), "test", |n| {
            if n < 3 {
                Err(Error::new(ExitCode::Failed, "external_unreachable", "gone"))
            } else {
                Ok(n)
            }
        });
        assert_eq!(r.result.unwrap(), 3);
        assert_eq!(r.attempts, 3);
        assert_eq!(r.failures.len(), 2);
        assert!(r.failures.iter().all(|a| a.retryable));
        assert!(r.failures[1].delay_ms >= r.failures[0].delay_ms);
    }

    #[test]
    fn permanent_failure_is_tried_once() {
        let mut calls = 0;
        let r: Retried<()> = retry(&fast(), "test", |_| {
            calls += 1;
            Err(Error::new(ExitCode::Failed, "permission_denied", "no").retryable(true))
        });
        assert_eq!(calls, 1);
        assert_eq!(r.attempts, 1);
        let e = r.result.unwrap_err();
        assert!(
            !e.retryable,
            "permission denied is reported as not retryable"
        );
        assert_eq!(r.failures[0].delay_ms, 0);
    }

    #[test]
    fn attempts_run_out_with_the_last_error() {
        let r: Retried<()> = retry(&fast(), "test", |n| {
            Err(Error::new(
                ExitCode::Failed,
                "rclone_timeout",
                format!("try {n}"),
            ))
        });
        assert_eq!(r.attempts, 3);
        let e = r.result.unwrap_err();
        assert_eq!(e.message, "try 3");
        assert!(e.retryable);
    }
}
