//! Named crash points, so tests (and the fault-injection suite) can stop a relay or a consumer at
//! the exact moment that matters, e.g. after Kafka acknowledged a batch but before the outbox rows
//! were deleted.
//!
//! | Point | Where |
//! | --- | --- |
//! | `relay.before_publish` | the relay read a batch of committed events and sent none of them |
//! | `relay.after_publish` | Kafka acknowledged the batch; its rows are not deleted yet |
//! | `consumer.mid_batch` | a batch's first record is applied in its transaction, the rest not yet |
//! | `consumer.after_commit` | a consumer's effect is committed; its offset is not stored yet |
//!
//! In code ([`Failpoints::arm`]) they are a test's tool and cost a map lookup when unarmed. From
//! the environment (`SHOP_FAILPOINTS`) they can kill a process, so a binary honours that
//! variable only when built with the crate's `failpoints` feature: the test command's builds
//! (`cargo test --workspace`, whose end-to-end tests kill the service binaries at these points)
//! have it, `cargo build` and the release image do not, and a production process started with
//! the variable set logs that it ignores it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What happens when execution reaches an armed failpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailpointAction {
    /// The component stops at once with an error, as if its process died there: nothing after
    /// the point runs, and its database connections are dropped.
    Crash,
    /// The whole process aborts (for tests that kill a real process).
    Abort,
}

/// A set of armed failpoints, shared by clones.
///
/// Failpoints are armed in code ([`Failpoints::arm`]) or, in builds with the `failpoints`
/// feature, from the `SHOP_FAILPOINTS` environment variable
/// (`relay.after_publish=abort,consumer.after_commit=crash`), read by [`Failpoints::from_env`].
/// The points are listed in the [module documentation](self).
#[derive(Clone, Debug, Default)]
pub struct Failpoints(Arc<Mutex<HashMap<String, FailpointAction>>>);

/// Returned by [`Failpoints::hit`] when a point armed with [`FailpointAction::Crash`] is reached.
#[derive(Debug, thiserror::Error)]
#[error("crashed at failpoint {0}")]
pub struct Crashed(pub String);

impl Failpoints {
    /// Failpoints armed by `SHOP_FAILPOINTS`; none when it is unset, or when the crate was
    /// built without its `failpoints` feature (then a set variable is reported and ignored).
    pub fn from_env() -> Self {
        let points = Self::default();
        let Ok(spec) = std::env::var("SHOP_FAILPOINTS") else {
            return points;
        };
        if cfg!(not(feature = "failpoints")) {
            tracing::warn!(
                SHOP_FAILPOINTS = %spec,
                "SHOP_FAILPOINTS is ignored: this binary was built without the failpoints feature."
            );
            return points;
        }
        for item in spec.split(',').filter(|s| !s.trim().is_empty()) {
            let (name, action) = item.split_once('=').unwrap_or((item, "crash"));
            let action = match action.trim() {
                "abort" => FailpointAction::Abort,
                _ => FailpointAction::Crash,
            };
            points.arm(name.trim(), action);
        }
        points
    }

    /// Arms `name`; the next time execution reaches it, `action` happens (once).
    pub fn arm(&self, name: &str, action: FailpointAction) {
        self.lock().insert(name.to_owned(), action);
    }

    /// Called at a failpoint: fires and disarms it if armed.
    ///
    /// # Errors
    /// [`Crashed`] when the point was armed with [`FailpointAction::Crash`].
    pub(crate) fn hit(&self, name: &str) -> Result<(), Crashed> {
        let action = self.lock().remove(name);
        match action {
            None => Ok(()),
            Some(FailpointAction::Crash) => {
                tracing::warn!(failpoint = name, "Crashing at failpoint.");
                Err(Crashed(name.to_owned()))
            }
            Some(FailpointAction::Abort) => {
                tracing::warn!(failpoint = name, "Aborting the process at failpoint.");
                std::process::abort()
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, FailpointAction>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE: &str =
        "failpoint::tests::shop_failpoints_is_honoured_only_by_builds_with_the_failpoints_feature";

    /// The environment belongs to the process, so the probe runs in a child process (this test
    /// binary again, running only this test) with `SHOP_FAILPOINTS` set.
    #[test]
    fn shop_failpoints_is_honoured_only_by_builds_with_the_failpoints_feature() {
        if std::env::var_os("SHOP_FAILPOINT_PROBE").is_some() {
            let _ = Failpoints::from_env().hit("probe");
            return;
        }
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", PROBE, "--test-threads", "1"])
            .env("SHOP_FAILPOINT_PROBE", "1")
            .env("SHOP_FAILPOINTS", "probe=abort")
            .output()
            .unwrap()
            .status;
        let aborted = !status.success();
        assert_eq!(
            aborted,
            cfg!(feature = "failpoints"),
            "SHOP_FAILPOINTS=probe=abort aborted the process: {aborted} ({status})"
        );
    }
}
