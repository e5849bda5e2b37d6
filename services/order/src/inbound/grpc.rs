//! The `OrderService` gRPC API. Errors become statuses here and nowhere else.
//!
//! Who may call what (`shop_runtime::auth`; its one rule for PERMISSION_DENIED vs NOT_FOUND):
//!
//! | Method | Allowed | Refused |
//! | --- | --- | --- |
//! | `PlaceOrder` | the customer named in the request; an operator on their behalf | anyone else: PERMISSION_DENIED |
//! | `GetOrder`, `CancelOrder` | the order's customer; an operator | another customer: NOT_FOUND, as for no such order; a service: PERMISSION_DENIED |
//! | `ListOrders` | the customer named in the request; an operator | anyone else: PERMISSION_DENIED |

use shop_proto::common::v1::Money;
use shop_proto::order::v1 as pb;
use shop_proto::order::v1::order_service_server::OrderService;
use shop_runtime::auth::{Caller, Role};
use shop_runtime::status::ServiceError;
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::app::{self, Backlog, Events};
use crate::domain::{Order, OrderRequest, OrderStatus};
use crate::outbound::inventory::InventoryCatalog;

/// The gRPC API over the order database.
#[derive(Clone, Debug)]
pub struct OrderApi {
    pub pool: PgPool,
    pub catalog: InventoryCatalog,
    pub events: Events,
    /// The saga's backlog, which PlaceOrder is admitted by.
    pub backlog: Backlog,
}

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

fn status_pb(status: Option<OrderStatus>) -> pb::OrderStatus {
    match status {
        Some(OrderStatus::Pending) => pb::OrderStatus::Pending,
        Some(OrderStatus::Confirmed) => pb::OrderStatus::Confirmed,
        Some(OrderStatus::Cancelled) => pb::OrderStatus::Cancelled,
        None => pb::OrderStatus::Unspecified,
    }
}

fn to_pb(order: Order) -> pb::Order {
    let money = |amount_minor| {
        Some(Money {
            amount_minor,
            currency: order.currency.clone(),
        })
    };
    pb::Order {
        order_id: order.order_id.to_string(),
        lines: order
            .lines
            .iter()
            .map(|l| pb::OrderLine {
                sku: l.sku.to_string(),
                quantity: l.quantity,
                unit_price: money(l.unit_price_minor),
            })
            .collect(),
        total: money(order.total_minor),
        status: status_pb(order.status).into(),
        cancellation_reason: order
            .cancellation_reason
            .map_or(pb::CancellationReason::Unspecified, Into::into)
            .into(),
        history: order
            .history
            .iter()
            .map(|h| pb::StatusChange {
                status: status_pb(h.status).into(),
                reason: h.reason.clone(),
                at: timestamp(h.at),
            })
            .collect(),
        created_at: timestamp(order.created_at),
        updated_at: timestamp(order.updated_at),
        customer_id: order.customer_id.to_string(),
    }
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.into_inner();
        caller.require_customer_or_operator(&r.customer_id)?;
        let lines: Vec<(String, u32)> = r.lines.into_iter().map(|l| (l.sku, l.quantity)).collect();
        let request = OrderRequest::parse(&r.idempotency_key, &r.customer_id, &lines)
            .map_err(|v| ServiceError::Invalid(v.into()))?;
        let order = app::place_order(
            &self.pool,
            &self.catalog,
            &self.events,
            &self.backlog,
            request,
        )
        .await?;
        Ok(Response::new(pb::PlaceOrderResponse {
            order: Some(to_pb(order)),
        }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let caller = Caller::of(&request)?;
        caller.require_any(&[Role::Customer, Role::Operator])?;
        let order = app::get_order(&self.pool, &request.into_inner().order_id, &caller).await?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(to_pb(order)),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.into_inner();
        caller.require_customer_or_operator(&r.customer_id)?;
        let (orders, next_page_token) =
            app::list_orders(&self.pool, &r.customer_id, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListOrdersResponse {
            orders: orders.into_iter().map(to_pb).collect(),
            next_page_token,
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        let caller = Caller::of(&request)?;
        caller.require_any(&[Role::Customer, Role::Operator])?;
        let order_id = request.into_inner().order_id;
        let order = app::cancel_order(&self.pool, &self.events, &order_id, &caller).await?;
        Ok(Response::new(pb::CancelOrderResponse {
            order: Some(to_pb(order)),
        }))
    }
}
