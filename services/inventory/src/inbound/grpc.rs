//! The `InventoryService` gRPC API. Errors become statuses here and nowhere else.
//!
//! Who may call what (`shop_runtime::auth`):
//!
//! | Method | Allowed | Refused |
//! | --- | --- | --- |
//! | `UpsertProduct`, `AdjustStock` | an operator | anyone else: PERMISSION_DENIED |
//! | `GetReservation` | an operator | anyone else: PERMISSION_DENIED |
//! | `GetProduct`, `ListProducts` | any authenticated caller: customers browse the catalog, the order service prices orders with its own identity | nobody (anonymous callers are UNAUTHENTICATED) |

use shop_proto::common::v1::Money;
use shop_proto::inventory::v1 as pb;
use shop_proto::inventory::v1::inventory_service_server::InventoryService;
use shop_runtime::auth::Caller;
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::app;
use crate::domain::{Product, Reservation};

/// The gRPC API over the inventory database.
#[derive(Clone, Debug)]
pub struct InventoryApi {
    pub pool: PgPool,
}

fn to_pb(product: Product) -> pb::Product {
    pb::Product {
        available: product.stock.available(),
        unit_price: Some(Money {
            amount_minor: product.unit_price_minor,
            currency: product.currency,
        }),
        sku: product.sku,
        name: product.name,
        on_hand: product.stock.on_hand,
        reserved: product.stock.reserved,
        sold: product.stock.sold,
    }
}

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn reservation_to_pb(row: Reservation) -> pb::Reservation {
    pb::Reservation {
        order_id: row.order_id,
        status: row.status,
        lines: row
            .lines
            .into_iter()
            .map(|(sku, quantity)| pb::ReservationLine { sku, quantity })
            .collect(),
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
    }
}

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    async fn get_reservation(
        &self,
        request: Request<pb::GetReservationRequest>,
    ) -> Result<Response<pb::GetReservationResponse>, Status> {
        Caller::of(&request)?.require_operator()?;
        let row = app::get_reservation(&self.pool, &request.into_inner().order_id).await?;
        Ok(Response::new(pb::GetReservationResponse {
            reservation: Some(reservation_to_pb(row)),
        }))
    }

    async fn upsert_product(
        &self,
        request: Request<pb::UpsertProductRequest>,
    ) -> Result<Response<pb::UpsertProductResponse>, Status> {
        Caller::of(&request)?.require_operator()?;
        let r = request.into_inner();
        let price = r
            .unit_price
            .as_ref()
            .map(|m| (m.amount_minor, m.currency.as_str()));
        let row = app::upsert_product(&self.pool, &r.sku, &r.name, price).await?;
        Ok(Response::new(pb::UpsertProductResponse {
            product: Some(to_pb(row)),
        }))
    }

    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        // Authenticated by the layer; the catalog is for every caller.
        Caller::of(&request)?;
        let row = app::get_product(&self.pool, &request.into_inner().sku).await?;
        Ok(Response::new(pb::GetProductResponse {
            product: Some(to_pb(row)),
        }))
    }

    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        Caller::of(&request)?;
        let r = request.into_inner();
        let (rows, next_page_token) =
            app::list_products(&self.pool, &r.skus, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListProductsResponse {
            products: rows.into_iter().map(to_pb).collect(),
            next_page_token,
        }))
    }

    async fn adjust_stock(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::AdjustStockResponse>, Status> {
        Caller::of(&request)?.require_operator()?;
        let r = request.into_inner();
        let row = app::adjust_stock(&self.pool, &r.sku, r.delta, &r.reason).await?;
        Ok(Response::new(pb::AdjustStockResponse {
            product: Some(to_pb(row)),
        }))
    }
}
