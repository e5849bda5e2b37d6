//! `tonic::Status` constructors carrying `google.rpc` error details, so clients (and grpcurl,
//! which the servers' reflection teaches those types) see which field was wrong and why, or
//! when to retry. Each service maps its typed errors onto these in one place.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Collects field violations while a request is validated, then answers `INVALID_ARGUMENT`
/// listing all of them (not just the first). The one way every service builds a `BadRequest`:
/// use cases collect into it, their error carries it, and the service's single
/// `From<Error> for Status` turns it into the status with [`From`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldViolations(Vec<(String, String)>);

impl FieldViolations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` (a path such as `lines[2].quantity`) is invalid because `description`.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push((field.into(), description.into()));
    }

    /// Records the error of `result` against `field`, returning its value if it was `Ok`.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: impl Into<String>,
        result: Result<T, E>,
    ) -> Option<T> {
        result.map_err(|e| self.add(field, e.to_string())).ok()
    }

    /// Records every `(field, description)` of `violations` (e.g. what a domain parser found),
    /// with `prefix` before each field (`amount.` for the fields of a nested message).
    pub fn extend(
        &mut self,
        prefix: &str,
        violations: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
    ) {
        for (field, description) in violations {
            self.add(format!("{prefix}{}", field.into()), description);
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields recorded, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(field, _)| field.as_str())
    }

    /// `Ok(())` when nothing was recorded, else the violations, for the use case's error.
    ///
    /// # Errors
    /// The violations, when there are any.
    pub fn into_result(self) -> Result<(), Self> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl From<Vec<(String, String)>> for FieldViolations {
    fn from(violations: Vec<(String, String)>) -> Self {
        Self(violations)
    }
}

impl From<FieldViolations> for Status {
    fn from(violations: FieldViolations) -> Self {
        invalid_argument(violations.0)
    }
}

/// `INVALID_ARGUMENT` with a `BadRequest` listing `(field, description)` violations.
pub fn invalid_argument(violations: Vec<(String, String)>) -> Status {
    let mut details = ErrorDetails::new();
    let summary = violations
        .iter()
        .map(|(f, d)| format!("{f}: {d}"))
        .collect::<Vec<_>>()
        .join("; ");
    for (field, description) in violations {
        details.add_bad_request_violation(field, description);
    }
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid request: {summary}"),
        details,
    )
}

/// `NOT_FOUND` with a `ResourceInfo` naming what was missing.
pub fn not_found(resource_type: &str, name: &str) -> Status {
    let details = ErrorDetails::with_resource_info(
        resource_type,
        name,
        "",
        format!("no {resource_type} {name}"),
    );
    Status::with_error_details(
        Code::NotFound,
        format!("{resource_type} {name} not found"),
        details,
    )
}

/// `FAILED_PRECONDITION` with a `PreconditionFailure` (`kind` e.g. `ORDER_STATUS`, `subject`
/// the resource) and a machine-readable `ErrorInfo` reason.
pub fn failed_precondition(kind: &str, subject: &str, description: &str) -> Status {
    let mut details = ErrorDetails::with_precondition_failure_violation(kind, subject, description);
    details.set_error_info(kind, "shop", std::collections::HashMap::new());
    Status::with_error_details(Code::FailedPrecondition, description, details)
}

/// `ALREADY_EXISTS` with a `ResourceInfo`.
pub fn already_exists(resource_type: &str, name: &str, description: &str) -> Status {
    let details = ErrorDetails::with_resource_info(resource_type, name, "", description);
    Status::with_error_details(Code::AlreadyExists, description, details)
}

/// `UNAVAILABLE` with `RetryInfo`: the client should retry after `retry_after`.
pub fn unavailable(message: impl Into<String>, retry_after: Duration) -> Status {
    Status::with_error_details(
        Code::Unavailable,
        message,
        ErrorDetails::with_retry_info(Some(retry_after)),
    )
}

/// `RESOURCE_EXHAUSTED` with a `RetryInfo`: the service is at its capacity and refuses the call
/// instead of queuing it; the client may come back after `retry_after`.
pub fn resource_exhausted(message: impl Into<String>, retry_after: Duration) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(retry_after)),
    )
}

/// `INTERNAL` without details: the cause is logged here, never sent to the client.
pub fn internal(error: &anyhow::Error) -> Status {
    tracing::error!(error = ?error, "Internal error.");
    Status::internal("internal error")
}

/// Why a use case of a service failed: the one error type of every service's `app` layer, so
/// that each kind of failure reaches clients the same way from every service, through the one
/// `From<ServiceError> for Status` below (with its `google.rpc` details).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed: every field that is, and why.
    #[error("invalid request")]
    Invalid(FieldViolations),
    /// What the request names does not exist (or is not the caller's to see: the same answer).
    #[error("{resource} {name} not found")]
    NotFound {
        resource: &'static str,
        name: String,
    },
    /// What the request would create exists already.
    #[error("{resource} {name} already exists")]
    AlreadyExists {
        resource: &'static str,
        name: String,
    },
    /// The state of `subject` (`products/SKU-1`) forbids it; `kind` is the machine-readable
    /// reason (`STOCK_RESERVED`).
    #[error("{description}")]
    Precondition {
        kind: &'static str,
        subject: String,
        description: String,
    },
    /// A dependency is down, slow or shed: the client may retry after `retry_after`.
    #[error("{reason}")]
    Unavailable {
        reason: String,
        retry_after: Duration,
    },
    /// The service is at its capacity (its backlog of unfinished work is full): refused rather
    /// than accepted and finished late; the client may retry after `retry_after`.
    #[error("{reason}")]
    Overloaded {
        reason: String,
        retry_after: Duration,
    },
    /// Anything else (the database, a bug): logged, answered `INTERNAL` without detail.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ServiceError {
    /// [`ServiceError::NotFound`].
    pub fn not_found(resource: &'static str, name: impl Into<String>) -> Self {
        Self::NotFound {
            resource,
            name: name.into(),
        }
    }
}

impl From<FieldViolations> for ServiceError {
    fn from(violations: FieldViolations) -> Self {
        Self::Invalid(violations)
    }
}

impl From<sqlx::Error> for ServiceError {
    fn from(error: sqlx::Error) -> Self {
        Self::Unexpected(error.into())
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Invalid(violations) => violations.into(),
            ServiceError::NotFound { resource, name } => not_found(resource, &name),
            ServiceError::AlreadyExists { resource, name } => already_exists(
                resource,
                &name,
                &format!("{resource} {name} already exists"),
            ),
            ServiceError::Precondition {
                kind,
                subject,
                description,
            } => failed_precondition(kind, &subject, &description),
            ServiceError::Unavailable {
                reason,
                retry_after,
            } => unavailable(reason, retry_after),
            ServiceError::Overloaded {
                reason,
                retry_after,
            } => resource_exhausted(reason, retry_after),
            ServiceError::Unexpected(e) => internal(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    #[test]
    fn every_violation_reaches_the_bad_request_with_its_field() {
        let mut violations = FieldViolations::new();
        violations.add("sku", "must not be empty");
        assert_eq!(violations.check("delta", "7".parse::<i64>()), Some(7));
        assert_eq!(violations.check("page_size", "x".parse::<u32>()), None);
        violations.extend("amount.", [("currency", "must be 3 letters")]);
        assert_eq!(
            violations.fields().collect::<Vec<_>>(),
            ["sku", "page_size", "amount.currency"]
        );
        let status = Status::from(violations.into_result().unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields: Vec<String> = status
            .get_details_bad_request()
            .unwrap()
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["sku", "page_size", "amount.currency"]);
        assert!(FieldViolations::new().into_result().is_ok());
    }
}
