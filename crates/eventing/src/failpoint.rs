//! Named crash points, so tests (and the fault-injection suite) can stop a relay or a consumer at
//! the exact moment that matters, e.g. after Kafka acknowledged a batch but before the outbox rows
//! were deleted.

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
/// Failpoints are armed in code ([`Failpoints::arm`]) or from the `SHOP_FAILPOINTS` environment
/// variable (`relay.after_publish=abort,consumer.after_commit=crash`), read by
/// [`Failpoints::from_env`].
///
/// Points: `relay.before_publish` (the relay read committed rows, nothing sent yet: the
/// moment after a business commit, before its event is published), `relay.after_publish`
/// (Kafka acked the batch, rows not yet deleted), `consumer.mid_batch` (a batch's first record
/// applied in its transaction, the rest not yet) and `consumer.after_commit` (the effect is
/// committed, the offset not yet stored).
#[derive(Clone, Debug, Default)]
pub struct Failpoints(Arc<Mutex<HashMap<String, FailpointAction>>>);

/// Returned by [`Failpoints::hit`] when a point armed with [`FailpointAction::Crash`] is reached.
#[derive(Debug, thiserror::Error)]
#[error("crashed at failpoint {0}")]
pub struct Crashed(pub String);

impl Failpoints {
    /// Failpoints armed by `SHOP_FAILPOINTS`; none when it is unset.
    pub fn from_env() -> Self {
        let points = Self::default();
        if let Ok(spec) = std::env::var("SHOP_FAILPOINTS") {
            for item in spec.split(',').filter(|s| !s.trim().is_empty()) {
                let (name, action) = item.split_once('=').unwrap_or((item, "crash"));
                let action = match action.trim() {
                    "abort" => FailpointAction::Abort,
                    _ => FailpointAction::Crash,
                };
                points.arm(name.trim(), action);
            }
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
