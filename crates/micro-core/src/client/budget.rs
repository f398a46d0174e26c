//! The retry budget (gRFC A6's and linkerd's idea): retries stay within a share of
//! the calls made, plus a small floor per second, so that when a service is overloaded
//! the client's retries cannot multiply the load. tower's `TpsBudget` keeps the count.

use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};

/// How many retries a client may make: `percent` of its calls over the last `window`,
/// plus `min_per_second` (linkerd's defaults: 20 %, 10 per second, 10 s).
///
/// ```
/// use std::time::Duration;
/// use micro_core::client::RetryBudget;
///
/// let budget = RetryBudget::default().percent(10.0).min_per_second(5);
/// # let _ = budget;
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudget {
    window: Duration,
    min_per_second: u32,
    percent: f32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            min_per_second: 10,
            percent: 20.0,
        }
    }
}

impl RetryBudget {
    /// How long a call counts towards the budget (default 10 s; 1 s to 60 s).
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window.clamp(Duration::from_secs(1), Duration::from_secs(60));
        self
    }

    /// Retries allowed each second whatever the number of calls (default 10).
    #[must_use]
    pub fn min_per_second(mut self, retries: u32) -> Self {
        self.min_per_second = retries;
        self
    }

    /// Retries allowed per 100 calls (default 20; 0 to 1000).
    #[must_use]
    pub fn percent(mut self, percent: f32) -> Self {
        self.percent = if percent.is_finite() {
            percent.clamp(0.0, 1000.0)
        } else {
            0.0
        };
        self
    }

    pub(super) fn build(self) -> Spend {
        Spend(TpsBudget::new(
            self.window,
            self.min_per_second,
            self.percent / 100.0,
        ))
    }
}

/// A client's running budget.
#[derive(Debug)]
pub(super) struct Spend(TpsBudget);

impl Spend {
    /// A call was made.
    pub(super) fn call(&self) {
        self.0.deposit();
    }

    /// Whether a retry may be made now (and counts it if so).
    pub(super) fn retry(&self) -> bool {
        self.0.withdraw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_the_share_and_the_floor() {
        let spend = RetryBudget::default()
            .min_per_second(1)
            .percent(10.0)
            .build();
        for _ in 0..100 {
            spend.call();
        }
        let allowed = (0..1000).filter(|_| spend.retry()).count();
        // 10 % of 100 calls, plus the floor of 1 per second over the 10 s window.
        assert!((10..=25).contains(&allowed), "{allowed}");
        let none = RetryBudget::default()
            .min_per_second(0)
            .percent(0.0)
            .build();
        assert!(!none.retry());
    }
}
