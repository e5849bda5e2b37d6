//! Settings come from environment variables (twelve-factor; Kubernetes ConfigMaps and Secrets map
//! onto them directly). Each service documents its variables and defaults in its `config.rs`.
//!
//! Every read goes through this module, which notes the variable's name. [`recording`] returns
//! the names a settings constructor read, so the deployment checks can prove that every
//! variable a service reads is set by its ConfigMap and its compose service: a variable added to
//! the code but not to the manifests fails CI instead of silently taking its default.

use std::cell::RefCell;
use std::net::SocketAddr;
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

thread_local! {
    static READ: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

fn note(name: &str) {
    READ.with(|read| {
        if let Some(names) = read.borrow_mut().as_mut()
            && !names.iter().any(|n| n == name)
        {
            names.push(name.to_owned());
        }
    });
}

/// Runs `read_settings` and returns its result with the variables it read, in order. A variable
/// read as one of several alternatives (`ORDER_DATABASE_URL` or `DATABASE_URL`) is reported as
/// `"ORDER_DATABASE_URL|DATABASE_URL"`.
pub fn recording<T>(read_settings: impl FnOnce() -> T) -> (T, Vec<String>) {
    let previous = READ.with(|read| read.borrow_mut().replace(Vec::new()));
    let result = read_settings();
    let names = READ.with(|read| std::mem::replace(&mut *read.borrow_mut(), previous));
    (result, names.unwrap_or_default())
}

fn value(name: &str) -> Option<String> {
    note(name);
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The variable's value, or `None` when unset or empty.
pub fn optional(name: &str) -> Option<String> {
    value(name)
}

/// The variable's value, or `default` when unset or empty.
pub fn string(name: &str, default: &str) -> String {
    value(name).unwrap_or_else(|| default.to_owned())
}

/// The first of `names` that is set and not empty, or `default`.
pub fn first_of(names: &[&str], default: &str) -> String {
    note(&names.join("|"));
    names
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| default.to_owned())
}

/// The one of `names` that is set (not empty), with its value, or `None` when none is: for
/// settings given one way or another (`AUTH_JWKS_FILE` or `AUTH_JWKS_URL`). Reported as
/// `"A|B"` by [`recording`].
///
/// # Errors
/// When more than one is set: which one wins would be a guess.
pub fn one_of(names: &[&'static str]) -> Result<Option<(&'static str, String)>, ConfigError> {
    note(&names.join("|"));
    let set: Vec<(&'static str, String)> = names
        .iter()
        .filter_map(|name| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (*name, v))
        })
        .collect();
    match set.len() {
        0 => Ok(None),
        1 => Ok(set.into_iter().next()),
        _ => Err(ConfigError {
            name: names.join(", "),
            value: set
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            reason: "set only one of them".into(),
        }),
    }
}

/// The variable parsed as `T`, or `default` when unset or empty.
///
/// # Errors
/// When the variable is set to something that does not parse.
pub fn parse<T: FromStr>(name: &str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match value(name) {
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

/// A listen address, `0.0.0.0:<default_port>` when unset.
///
/// # Errors
/// When the variable is set to something that is not `host:port`.
pub fn listen_addr(name: &str, default_port: u16) -> Result<SocketAddr, ConfigError> {
    parse(name, SocketAddr::from(([0, 0, 0, 0], default_port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_lists_every_variable_read_once_in_order() {
        let ((), names) = recording(|| {
            let _ = string("SHOP_TEST_A", "a");
            let _ = first_of(&["SHOP_TEST_B", "SHOP_TEST_C"], "b");
            let _ = millis("SHOP_TEST_D", Duration::from_secs(1));
            let _ = string("SHOP_TEST_A", "a");
        });
        assert_eq!(
            names,
            ["SHOP_TEST_A", "SHOP_TEST_B|SHOP_TEST_C", "SHOP_TEST_D"]
        );
        // Outside `recording`, nothing is kept.
        let _ = string("SHOP_TEST_E", "e");
        let ((), names) = recording(|| ());
        assert!(names.is_empty());
    }
}
