//! A service of the workspace running inside the test process, built and run as its `main`
//! would (`shop_runtime::skeleton`), on loopback ports the kernel picks: the one way every
//! service's tests and the suite's in-process tests start one.

use std::net::SocketAddr;

use shop_runtime::auth::AuthSettings;
use shop_runtime::config::{Identity, ServiceSettings};
use shop_runtime::skeleton::{Application, Service};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::TestKafka;

/// How the test issuer's tokens ([`crate::test_auth`]) are checked.
pub fn auth_settings() -> AuthSettings {
    AuthSettings::with_jwks_file(
        crate::test_auth().jwks_file(),
        crate::auth::ISSUER,
        crate::auth::AUDIENCE,
    )
}

/// The settings every service has, for a test of service `identity` on `database_url` and
/// `kafka`, trusting the test issuer ([`ServiceSettings::for_test`]).
pub fn service_settings(
    identity: &Identity,
    database_url: impl Into<String>,
    kafka: &TestKafka,
) -> ServiceSettings {
    ServiceSettings::for_test(
        identity,
        database_url,
        kafka.bootstrap_servers(),
        auth_settings(),
    )
}

/// A running service.
#[derive(Debug)]
pub struct Running {
    /// Its gRPC API.
    pub addr: SocketAddr,
    /// Its `/metrics`.
    pub metrics_addr: SocketAddr,
    /// Its admin API.
    pub admin_addr: SocketAddr,
    /// Its database.
    pub pool: PgPool,
    /// What `run` returned, once `stop` is cancelled (or a part failed).
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// `http://<addr>`, for a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Builds service `S` with `settings` (migrating its database, binding its ports) and runs it
/// until `stop` is cancelled.
///
/// # Panics
/// When it cannot be built.
pub async fn spawn<S: Service>(settings: S::Settings, stop: &CancellationToken) -> Running
where
    S::Settings: Send,
{
    let app = Application::<S>::build(settings, stop)
        .await
        .unwrap_or_else(|e| panic!("{} does not build: {e:#}", S::IDENTITY.binary));
    Running {
        addr: app.local_addr(),
        metrics_addr: app.metrics_addr(),
        admin_addr: app.admin_addr(),
        pool: app.pool().clone(),
        task: tokio::spawn(app.run(stop.clone())),
    }
}

/// Asserts what Kubernetes relies on: the service at `addr` reports `service` SERVING, and once
/// `stop` is cancelled it drains: NOT_SERVING, or its connection closed, within 300 ms.
///
/// # Panics
/// When either does not hold.
pub async fn assert_serves_then_drains(addr: SocketAddr, service: &str, stop: &CancellationToken) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("a URL")
        .connect()
        .await
        .expect("the service accepts connections");
    let health = HealthClient::new(channel);
    crate::eventually(
        &format!("{service} SERVING"),
        std::time::Duration::from_secs(10),
        || {
            let mut health = health.clone();
            let service = service.to_owned();
            async move {
                let status = health
                    .check(HealthCheckRequest { service })
                    .await
                    .ok()?
                    .into_inner()
                    .status;
                (status == ServingStatus::Serving as i32).then_some(())
            }
        },
    )
    .await;
    stop.cancel();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = health
        .clone()
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(
        after.map_or(true, |r| r.into_inner().status
            != ServingStatus::Serving as i32),
        "still SERVING 300 ms after the shutdown began"
    );
}

/// The fields an `INVALID_ARGUMENT` status's `BadRequest` names, in order.
///
/// # Panics
/// When the status carries no `BadRequest`.
pub fn bad_request_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt as _;
    status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no field violations in {status:?}"))
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

/// Asserts that `status` refuses a call for want of capacity, as every service's admission
/// does: `RESOURCE_EXHAUSTED` with a `RetryInfo` asking for a positive delay, which it returns.
///
/// # Panics
/// When it is anything else.
pub fn assert_overloaded(status: &tonic::Status) -> std::time::Duration {
    use tonic_types::StatusExt as _;
    assert_eq!(
        status.code(),
        tonic::Code::ResourceExhausted,
        "refused for want of capacity: {status:?}"
    );
    status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .filter(|delay| !delay.is_zero())
        .unwrap_or_else(|| panic!("no positive retry delay in {status:?}"))
}
