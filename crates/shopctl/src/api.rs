//! The gRPC clients: each service's admin API and the public APIs `shopctl order` reads, all
//! with the operator's bearer token.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use shop_proto::admin::v1::admin_service_client::AdminServiceClient;
use shop_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::notification::v1::notification_service_client::NotificationServiceClient;
use shop_proto::order::v1::order_service_client::OrderServiceClient;
use shop_proto::payment::v1::payment_service_client::PaymentServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// The four services, in the saga's order.
pub(crate) const SERVICES: [&str; 4] = ["order", "inventory", "payment", "notification"];

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone, Debug)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        match &self.0 {
            Some(value) => {
                request
                    .metadata_mut()
                    .insert("authorization", value.clone());
                Ok(request)
            }
            None => Err(tonic::Status::unauthenticated(
                "shopctl has no token: pass --token, or set SHOP_TOKEN or SHOP_TOKEN_FILE (an operator's token: shop-token mint --operator NAME; deploy/run.sh writes one to $SHOP_STATE_DIR/auth/operator.token)",
            )),
        }
    }
}

impl Bearer {
    /// The token given on the command line or in the environment, else read from `file`.
    pub(crate) fn new(token: Option<&str>, file: Option<&Path>) -> anyhow::Result<Self> {
        let token = match (token, file) {
            (Some(token), _) => Some(token.trim().to_owned()),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| format!("reading the token file {}", file.display()))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let value = match token.filter(|t| !t.is_empty()) {
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse()
                    .context("the token is not valid header text")?,
            ),
            None => None,
        };
        Ok(Self(value))
    }
}

pub(crate) type Admin = AdminServiceClient<InterceptedService<Channel, Bearer>>;
pub(crate) type Orders = OrderServiceClient<InterceptedService<Channel, Bearer>>;
pub(crate) type Inventory = InventoryServiceClient<InterceptedService<Channel, Bearer>>;
pub(crate) type Payments = PaymentServiceClient<InterceptedService<Channel, Bearer>>;
pub(crate) type Notifications = NotificationServiceClient<InterceptedService<Channel, Bearer>>;

/// Where everything is, and the token.
#[derive(Clone, Debug)]
pub(crate) struct Clients {
    pub(crate) bearer: Bearer,
    /// Admin API endpoints, by service (in [`SERVICES`] order).
    pub(crate) admin: [String; 4],
    /// Public API endpoints, by service.
    pub(crate) public: [String; 4],
    pub(crate) timeout: Duration,
}

impl Clients {
    fn channel(&self, url: &str) -> anyhow::Result<Channel> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .with_context(|| format!("{url} is not a valid endpoint"))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout);
        Ok(endpoint.connect_lazy())
    }

    fn index(service: &str) -> anyhow::Result<usize> {
        match SERVICES.iter().position(|s| *s == service) {
            Some(i) => Ok(i),
            None => bail!("unknown service {service:?}: one of {SERVICES:?}"),
        }
    }

    /// The admin API of `service`.
    pub(crate) fn admin(&self, service: &str) -> anyhow::Result<Admin> {
        let url = &self.admin[Self::index(service)?];
        Ok(AdminServiceClient::with_interceptor(
            self.channel(url)?,
            self.bearer.clone(),
        ))
    }

    pub(crate) fn orders(&self) -> anyhow::Result<Orders> {
        Ok(OrderServiceClient::with_interceptor(
            self.channel(&self.public[0])?,
            self.bearer.clone(),
        ))
    }

    pub(crate) fn inventory(&self) -> anyhow::Result<Inventory> {
        Ok(InventoryServiceClient::with_interceptor(
            self.channel(&self.public[1])?,
            self.bearer.clone(),
        ))
    }

    pub(crate) fn payments(&self) -> anyhow::Result<Payments> {
        Ok(PaymentServiceClient::with_interceptor(
            self.channel(&self.public[2])?,
            self.bearer.clone(),
        ))
    }

    pub(crate) fn notifications(&self) -> anyhow::Result<Notifications> {
        Ok(NotificationServiceClient::with_interceptor(
            self.channel(&self.public[3])?,
            self.bearer.clone(),
        ))
    }
}

/// A refused or failed call, as an error that says which service answered what (with the
/// field violations and precondition failures of the status, if any).
pub(crate) fn failed(service: &str, what: &str, status: &tonic::Status) -> anyhow::Error {
    use tonic_types::StatusExt as _;
    let mut text = format!(
        "{service}: {what}: {:?}: {}",
        status.code(),
        status.message()
    );
    let details = status.get_error_details();
    if let Some(bad) = details.bad_request() {
        for v in &bad.field_violations {
            text.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    if let Some(pre) = details.precondition_failure() {
        for v in &pre.violations {
            text.push_str(&format!(
                "\n  {} {}: {}",
                v.r#type, v.subject, v.description
            ));
        }
    }
    anyhow::anyhow!(text)
}
