//! gRPC clients of the four services, and waiting until they all report SERVING. Every call
//! carries a bearer token (`shop_runtime::auth`); health checks need none.

use std::time::{Duration, Instant};

use shop_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::notification::v1::notification_service_client::NotificationServiceClient;
use shop_proto::order::v1::order_service_client::OrderServiceClient;
use shop_proto::payment::v1::payment_service_client::PaymentServiceClient;
use shop_testkit::{Authed, Bearer, TokenIssuer};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Where the four services listen.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub order: String,
    pub inventory: String,
    pub payment: String,
    pub notification: String,
}

impl Endpoints {
    /// From `ORDER_URL`, `INVENTORY_URL`, `PAYMENT_URL`, `NOTIFICATION_URL`, defaulting to the
    /// services' default ports on loopback.
    pub fn from_env() -> Self {
        let get = |name: &str, port: u16| {
            std::env::var(name).unwrap_or_else(|_| format!("http://127.0.0.1:{port}"))
        };
        Self {
            order: get("ORDER_URL", 50051),
            inventory: get("INVENTORY_URL", 50052),
            payment: get("PAYMENT_URL", 50053),
            notification: get("NOTIFICATION_URL", 50054),
        }
    }
}

/// The issuer of a dev run's tokens, for the demo and the load generator, which act as the
/// shop's operator and its customers: the private key at `SHOP_SIGNING_KEY` (what
/// `shop-token keygen` wrote; `deploy/run.sh` keeps it in its state directory), with the
/// issuer and audience of `AUTH_ISSUER` / `AUTH_AUDIENCE` (default `shop`).
///
/// # Errors
/// When `SHOP_SIGNING_KEY` is unset or not an Ed25519 private key.
pub fn dev_issuer() -> anyhow::Result<TokenIssuer> {
    let key = std::env::var("SHOP_SIGNING_KEY").map_err(|_| {
        anyhow::anyhow!(
            "SHOP_SIGNING_KEY is not set: the path of the dev signing key (deploy/run.sh keeps it in $SHOP_STATE_DIR/auth/signing-key.pem)"
        )
    })?;
    let var = |name: &str, default: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    TokenIssuer::from_pem_file(
        std::path::Path::new(&key),
        &var("AUTH_ISSUER", shop_testkit::auth::ISSUER),
        &var("AUTH_AUDIENCE", shop_testkit::auth::AUDIENCE),
    )
}

/// Connected clients, whose calls carry one caller's token.
#[derive(Clone, Debug)]
pub struct Clients {
    pub order: OrderServiceClient<Authed>,
    pub inventory: InventoryServiceClient<Authed>,
    pub payment: PaymentServiceClient<Authed>,
    pub notification: NotificationServiceClient<Authed>,
    channels: [Channel; 4],
}

impl Clients {
    /// Waits (up to `patience`) until every service reports SERVING, then connects; every call
    /// carries `token`.
    ///
    /// # Errors
    /// When a service is still not serving after `patience`.
    pub async fn connect(
        endpoints: &Endpoints,
        patience: Duration,
        token: &str,
    ) -> anyhow::Result<Self> {
        let deadline = Instant::now() + patience;
        let mut channels = Vec::new();
        for url in [
            &endpoints.order,
            &endpoints.inventory,
            &endpoints.payment,
            &endpoints.notification,
        ] {
            let channel = channel(url)?;
            wait_serving(url, deadline.saturating_duration_since(Instant::now())).await?;
            channels.push(channel);
        }
        let channels: [Channel; 4] = channels
            .try_into()
            .map_err(|_| anyhow::anyhow!("four channels"))?;
        Ok(Self::on(channels, &Bearer::new(token)))
    }

    fn on(channels: [Channel; 4], bearer: &Bearer) -> Self {
        let [order, inventory, payment, notification] = channels.clone();
        let authed = |channel| InterceptedService::new(channel, bearer.clone());
        Self {
            order: OrderServiceClient::new(authed(order)),
            inventory: InventoryServiceClient::new(authed(inventory)),
            payment: PaymentServiceClient::new(authed(payment)),
            notification: NotificationServiceClient::new(authed(notification)),
            channels,
        }
    }

    /// The same connections, calling with `token` (another customer, an operator).
    pub fn with_token(&self, token: &str) -> Self {
        self.with_bearer(Bearer::new(token))
    }

    /// The same connections, calling with `bearer` (which may be no token at all).
    pub fn with_bearer(&self, bearer: Bearer) -> Self {
        Self::on(self.channels.clone(), &bearer)
    }
}

fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy())
}

/// Waits (up to `patience`) until the server at `url` reports SERVING.
///
/// # Errors
/// When it still does not after `patience`.
pub async fn wait_serving(url: &str, patience: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + patience;
    let channel = channel(url)?;
    loop {
        let serving = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status == 1)
            .unwrap_or(false);
        if serving {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{url} is not serving after {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
