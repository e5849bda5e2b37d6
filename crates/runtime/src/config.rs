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

/// Who a service is: the names it goes by and the defaults of its settings. Each service
/// declares one (`IDENTITY` of its [`crate::skeleton::Service`]); `deploy/topology.yaml` holds
/// the same values for the scripts and the manifests, and `crates/suite/tests/deployment.rs`
/// keeps the two in step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `order`, `inventory`, ...: upper-cased, the prefix of its variables (`ORDER_GRPC_ADDR`).
    pub name: &'static str,
    /// The binary, its `service.name` in traces and its default consumer group:
    /// `<name>-service`.
    pub binary: &'static str,
    /// Its database on a shared local server (`postgres://…/<database>` by default).
    pub database: &'static str,
    /// Default ports of its gRPC API, `/metrics` and admin API.
    pub grpc_port: u16,
    pub metrics_port: u16,
    pub admin_port: u16,
}

impl Identity {
    /// `ORDER`, `INVENTORY`, ...: the prefix of the service's own variables.
    pub fn prefix(&self) -> String {
        self.name.to_uppercase()
    }

    /// The `ce_source` of the events it publishes: `/shop/<binary>`.
    pub fn event_source(&self) -> String {
        format!("/shop/{}", self.binary)
    }
}

/// The settings every service has, read with its prefix (defaults in brackets; `<P>` is the
/// service's prefix, e.g. `ORDER`):
///
/// | Variable | Meaning |
/// | --- | --- |
/// | `<P>_GRPC_ADDR` | gRPC listen address [`0.0.0.0:<grpc_port>`] |
/// | `<P>_METRICS_ADDR` | Prometheus `/metrics` listen address [`0.0.0.0:<metrics_port>`] |
/// | `<P>_ADMIN_ADDR` | admin gRPC API listen address, operators only (`shopctl`; never exposed to ordinary clients) [`0.0.0.0:<admin_port>`] |
/// | `<P>_DATABASE_URL` or `DATABASE_URL` | its own database [`postgres://postgres@127.0.0.1:5432/<database>`] |
/// | `<P>_DB_MAX_CONNECTIONS` | the API's pool size [`10`] |
/// | `<P>_CONSUMER_DB_CONNECTIONS` | the consumer's own connections, which API traffic cannot take [`3`] |
/// | `KAFKA_BOOTSTRAP_SERVERS` | Kafka [`127.0.0.1:9092`]; the login comes from `KAFKA_SECURITY_*`, `KAFKA_SASL_*`, `KAFKA_SSL_*` ([`crate::kafka`]) |
/// | `<P>_CONSUMER_GROUP` | consumer group and inbox name [`<binary>`] |
/// | `KAFKA_SESSION_TIMEOUT_MS` | how long the group waits for a dead member [`10000`] |
/// | `<P>_INBOX_RETENTION_MS` | how long inbox rows (and published dead-letter rows) are kept: at least the `retention.ms` + `segment.ms` of the topics it consumes (`shop_eventing::Retention`) [`1296000000`: 15 days] |
/// | `GRPC_REQUEST_TIMEOUT_MS` | longest a call may run [`10000`] |
/// | `<P>_API_MAX_IN_FLIGHT` | calls of the public API in flight at once; one more is refused at once with `RESOURCE_EXHAUSTED` and a `RetryInfo` ([`crate::admission`]) [`64`] |
/// | `AUTH_JWKS_FILE` or `AUTH_JWKS_URL`, `AUTH_ISSUER`, `AUTH_AUDIENCE`, `AUTH_JWKS_REFRESH_MS` | how callers' bearer tokens are checked: [`crate::auth::AuthSettings`] (a JWKS is required) |
#[derive(Clone, Debug)]
pub struct ServiceSettings {
    pub grpc_addr: SocketAddr,
    /// Where Prometheus scrapes `/metrics`.
    pub metrics_addr: SocketAddr,
    /// Where the admin API (`shop.admin.v1.AdminService`) listens.
    pub admin_addr: SocketAddr,
    pub database_url: String,
    pub db_max_connections: u32,
    /// The consumer's own connections, outside the API's pool (`db_max_connections`).
    pub consumer_db_connections: u32,
    pub kafka_bootstrap_servers: String,
    /// The service's consumer group, and the name of its inbox.
    pub consumer_group: String,
    pub session_timeout: Duration,
    /// How long the consumer's inbox and dead-letter rows are kept.
    pub inbox_retention: Duration,
    pub request_timeout: Duration,
    /// How many calls of the public API may be in flight at once ([`crate::admission`]).
    pub api_max_in_flight: usize,
    /// How callers are authenticated.
    pub auth: crate::auth::AuthSettings,
}

impl ServiceSettings {
    /// Reads the settings of the service `identity` from the environment.
    ///
    /// # Errors
    /// A variable that is set but invalid.
    pub fn from_env(identity: &Identity) -> Result<Self, ConfigError> {
        let p = identity.prefix();
        let own_database = format!("{p}_DATABASE_URL");
        Ok(Self {
            grpc_addr: listen_addr(&format!("{p}_GRPC_ADDR"), identity.grpc_port)?,
            metrics_addr: listen_addr(&format!("{p}_METRICS_ADDR"), identity.metrics_port)?,
            admin_addr: listen_addr(&format!("{p}_ADMIN_ADDR"), identity.admin_port)?,
            database_url: first_of(
                &[own_database.as_str(), "DATABASE_URL"],
                &format!("postgres://postgres@127.0.0.1:5432/{}", identity.database),
            ),
            db_max_connections: parse(&format!("{p}_DB_MAX_CONNECTIONS"), 10)?,
            consumer_db_connections: parse(&format!("{p}_CONSUMER_DB_CONNECTIONS"), 3)?,
            kafka_bootstrap_servers: string("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            consumer_group: string(&format!("{p}_CONSUMER_GROUP"), identity.binary),
            session_timeout: millis("KAFKA_SESSION_TIMEOUT_MS", Duration::from_secs(10))?,
            inbox_retention: millis(
                &format!("{p}_INBOX_RETENTION_MS"),
                shop_eventing::Retention::default().window,
            )?,
            request_timeout: millis("GRPC_REQUEST_TIMEOUT_MS", Duration::from_secs(10))?,
            api_max_in_flight: parse(&format!("{p}_API_MAX_IN_FLIGHT"), 64)?,
            auth: crate::auth::AuthSettings::from_env()?,
        })
    }

    /// Settings for a test: ports the kernel picks on loopback, the test's database and broker,
    /// callers checked by `auth`, a consumer group of its own (`<binary>-<uuid>`, so that tests
    /// never share one), and a short session timeout (a killed member is noticed within 6 s).
    pub fn for_test(
        identity: &Identity,
        database_url: impl Into<String>,
        kafka_bootstrap_servers: impl Into<String>,
        auth: crate::auth::AuthSettings,
    ) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            grpc_addr: any,
            metrics_addr: any,
            admin_addr: any,
            database_url: database_url.into(),
            db_max_connections: 10,
            consumer_db_connections: 3,
            kafka_bootstrap_servers: kafka_bootstrap_servers.into(),
            consumer_group: format!("{}-{}", identity.binary, uuid::Uuid::new_v4().simple()),
            session_timeout: Duration::from_secs(6),
            inbox_retention: shop_eventing::Retention::default().window,
            request_timeout: Duration::from_secs(10),
            api_max_in_flight: 64,
            auth,
        }
    }
}

/// The suite's event topics, each named by one variable that every service producing or
/// consuming it reads (so that a deployment renames a topic in one place), defaulting to the
/// contract's name (`shop_proto::topics`).
pub mod topics {
    /// `ORDER_EVENTS_TOPIC` [`order.events.v1`].
    pub fn order_events() -> String {
        super::string("ORDER_EVENTS_TOPIC", shop_proto::topics::ORDER_EVENTS)
    }

    /// `INVENTORY_EVENTS_TOPIC` [`inventory.events.v1`].
    pub fn inventory_events() -> String {
        super::string(
            "INVENTORY_EVENTS_TOPIC",
            shop_proto::topics::INVENTORY_EVENTS,
        )
    }

    /// `PAYMENT_EVENTS_TOPIC` [`payment.events.v1`].
    pub fn payment_events() -> String {
        super::string("PAYMENT_EVENTS_TOPIC", shop_proto::topics::PAYMENT_EVENTS)
    }
}

/// What a service's settings are made of: the [`ServiceSettings`] every service has, and its
/// own.
pub trait Settings: Sized {
    /// Reads them from the environment.
    ///
    /// # Errors
    /// A variable that is set but invalid.
    fn from_env() -> Result<Self, ConfigError>;

    /// The part every service has.
    fn service(&self) -> &ServiceSettings;
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
