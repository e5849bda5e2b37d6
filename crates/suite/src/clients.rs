//! gRPC clients of the four services, and waiting until they all report SERVING.

use std::time::{Duration, Instant};

use shop_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::notification::v1::notification_service_client::NotificationServiceClient;
use shop_proto::order::v1::order_service_client::OrderServiceClient;
use shop_proto::payment::v1::payment_service_client::PaymentServiceClient;
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

/// Connected clients.
#[derive(Clone, Debug)]
pub struct Clients {
    pub order: OrderServiceClient<Channel>,
    pub inventory: InventoryServiceClient<Channel>,
    pub payment: PaymentServiceClient<Channel>,
    pub notification: NotificationServiceClient<Channel>,
}

impl Clients {
    /// Waits (up to `patience`) until every service reports SERVING, then connects.
    ///
    /// # Errors
    /// When a service is still not serving after `patience`.
    pub async fn connect(endpoints: &Endpoints, patience: Duration) -> anyhow::Result<Self> {
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
        let mut channels = channels.into_iter();
        let mut next = || channels.next().expect("four channels");
        Ok(Self {
            order: OrderServiceClient::new(next()),
            inventory: InventoryServiceClient::new(next()),
            payment: PaymentServiceClient::new(next()),
            notification: NotificationServiceClient::new(next()),
        })
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
