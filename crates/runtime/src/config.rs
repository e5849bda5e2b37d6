//! Settings come from environment variables (twelve-factor; Kubernetes ConfigMaps and Secrets map
//! onto them directly). Each service documents its variables and defaults in its README.

use std::str::FromStr;
use std::time::Duration;

/// A variable that is set but does not parse.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub value: String,
    pub reason: String,
}

/// The variable's value, or `default` when unset or empty.
pub fn string(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The variable parsed as `T`, or `default` when unset or empty.
///
/// # Errors
/// When the variable is set to something that does not parse.
pub fn parse<T: FromStr>(name: &str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name).ok().filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(value) => value.parse().map_err(|e: T::Err| ConfigError {
            name: name.to_owned(),
            reason: e.to_string(),
            value,
        }),
    }
}

/// A duration given in milliseconds, or `default`.
///
/// # Errors
/// When the variable is set to something that is not a whole number.
pub fn millis(name: &str, default: Duration) -> Result<Duration, ConfigError> {
    let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
    parse(name, default_ms).map(Duration::from_millis)
}
