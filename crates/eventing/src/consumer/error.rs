//! Why a record could not be applied, and whether trying again can change that.

/// Why a handler could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// May succeed when tried again (a lock timeout, a serialization failure, a dependency or
    /// the database down, a failover): retried with backoff for as long as it lasts. Its
    /// partition waits meanwhile (the others flow); it is never dead-lettered.
    #[error("transient: {0:#}")]
    Transient(anyhow::Error),
    /// Will fail however often it is tried (a malformed payload, an event that violates the
    /// contract, a bug in the handler, data the database refuses): dead-lettered at once.
    #[error("permanent: {0:#}")]
    Permanent(anyhow::Error),
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn transient(error: impl Into<anyhow::Error>) -> Self {
        Self::Transient(error.into())
    }

    /// A failure not worth retrying.
    pub fn permanent(error: impl Into<anyhow::Error>) -> Self {
        Self::Permanent(error.into())
    }

    /// A handler that panicked: a bug, which the same record will hit again.
    pub(crate) fn panicked(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string payload".to_owned());
        Self::Permanent(anyhow::anyhow!("the handler panicked: {message}"))
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Transient(_) => "transient",
            Self::Permanent(_) => "permanent",
        }
    }

    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

impl From<sqlx::Error> for HandlerError {
    /// Transient: the connection or the pool failed, or the database answered with a SQLSTATE
    /// that a later try can escape (see [`sqlstate_is_transient`]). Permanent: everything
    /// else, above all what the record's own data or the handler's code causes (classes 22,
    /// 23, 42, 54).
    fn from(error: sqlx::Error) -> Self {
        if is_transient(&error) {
            Self::Transient(error.into())
        } else {
            Self::Permanent(error.into())
        }
    }
}

/// Whether trying again later can make `error` go away.
pub(crate) fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| sqlstate_is_transient(&code)),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        _ => false,
    }
}

/// Whether a SQLSTATE means "try again later": the condition is in the database, the server
/// or the cluster, not in the statement or its data.
///
/// Transient: `08` connection exceptions; `25006` read-only transaction (a connection to a
/// primary that a failover demoted, or to a standby: the next connection reaches the new
/// primary); `25P03`/`25P04` the session or transaction was ended by a timeout; `40`
/// serialization failures and deadlocks; `53` insufficient resources (disk full, out of
/// memory, too many connections); `55P03` lock not available (`lock_timeout`, `NOWAIT`: the
/// holder finishes); `57` operator intervention (`57014` query canceled by
/// `statement_timeout` or an operator, `57P01`..`57P05` shutdowns and restarts); `58`
/// system and I/O errors; `72000` snapshot too old.
///
/// Everything else is permanent, in particular `22` data exceptions (a NUL byte, a number out
/// of range: hostile or broken input), `23` integrity violations, `42` syntax errors and
/// undefined objects, `54` program limits (a value over the btree limit): the same record
/// fails the same way every time.
pub(crate) fn sqlstate_is_transient(code: &str) -> bool {
    match code {
        "25006" | "25P03" | "25P04" | "55P03" | "72000" => true,
        _ => matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_transient_when_the_cause_is_outside_the_record() {
        for code in [
            "08000", "08006", "08P01", // connection
            "25006", // read only: a demoted primary after a failover
            "25P03", "25P04", // session or transaction ended by a timeout
            "40001", "40P01", // serialization failure, deadlock
            "53100", "53200", "53300", // disk full, out of memory, too many connections
            "55P03", // lock not available
            "57014", "57P01", "57P02", "57P03", // canceled, shutdowns
            "58000", "58030", "58P01", // system, I/O
            "72000", // snapshot too old
        ] {
            assert!(sqlstate_is_transient(code), "{code} is transient");
        }
    }

    #[test]
    fn sqlstates_are_permanent_when_the_record_or_the_code_is_at_fault() {
        for code in [
            "22021", "22003", "22P02", "22001", // bad bytes, out of range, bad text, too long
            "23505", "23503", "23514", "23502", // integrity
            "42601", "42P01", "42703", // syntax, undefined table or column
            "54000", "54001", // program limits (index row size, statement too complex)
            "0A000", "21000", "25001", "55000", "P0001",
            "XX000", // and what else is not listed
        ] {
            assert!(!sqlstate_is_transient(code), "{code} is permanent");
        }
    }

    #[test]
    fn connection_and_pool_failures_are_transient_and_decoding_ones_permanent() {
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(is_transient(&sqlx::Error::Io(std::io::Error::other(
            "connection reset"
        ))));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::ColumnNotFound("x".into())));
    }

    #[test]
    fn a_panic_is_a_permanent_failure_that_says_what_happened() {
        let error = HandlerError::panicked(&"index out of bounds");
        assert!(!error.is_transient());
        assert!(error.to_string().contains("panicked: index out of bounds"));
        let error = HandlerError::panicked(&String::from("overflow"));
        assert!(error.to_string().contains("overflow"));
    }
}
