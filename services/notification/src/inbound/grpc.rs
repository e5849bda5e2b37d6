//! The `NotificationService` gRPC API. Errors become statuses here and nowhere else.
//!
//! Who may call what (`shop_runtime::auth`; its one rule for PERMISSION_DENIED vs NOT_FOUND):
//!
//! | Method | Allowed | Refused |
//! | --- | --- | --- |
//! | `ListNotifications` by `customer_id` | that customer; an operator | anyone else: PERMISSION_DENIED |
//! | `ListNotifications` by `order_id` | the order's customer; an operator | another customer: an empty page, as for an order without notifications; a service: PERMISSION_DENIED |

use chrono::{DateTime, Utc};
use shop_proto::notification::v1 as pb;
use shop_proto::notification::v1::notification_service_server::NotificationService;
use shop_runtime::auth::{Caller, Role};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::app;
use crate::domain::{DeliveryStatus, Notification};

/// The gRPC API over the notification database.
#[derive(Clone, Debug)]
pub struct NotificationApi {
    pub pool: PgPool,
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn to_pb(notification: Notification) -> pb::Notification {
    let status = match notification.status {
        DeliveryStatus::Pending => pb::DeliveryStatus::Pending,
        DeliveryStatus::Delivered => pb::DeliveryStatus::Delivered,
        DeliveryStatus::Failed => pb::DeliveryStatus::Failed,
    };
    // traceparent: `00-<trace id>-<span id>-<flags>`.
    let trace_id = notification
        .traceparent
        .as_deref()
        .and_then(|t| t.split('-').nth(1))
        .filter(|id| id.len() == 32)
        .unwrap_or_default()
        .to_owned();
    pb::Notification {
        trace_id,
        notification_id: notification.notification_id.to_string(),
        order_id: notification.order_id,
        customer_id: notification.customer_id.to_string(),
        kind: notification.kind.as_str().to_owned(),
        message: notification.message,
        channel: notification.channel,
        status: status.into(),
        attempts: notification.attempts,
        created_at: Some(timestamp(notification.created_at)),
        delivered_at: notification.delivered_at.map(timestamp),
    }
}

#[tonic::async_trait]
impl NotificationService for NotificationApi {
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let caller = Caller::of(&request)?;
        caller.require_any(&[Role::Customer, Role::Operator])?;
        let r = request.into_inner();
        if !r.customer_id.is_empty() {
            caller.require_customer_or_operator(&r.customer_id)?;
        }
        let (notifications, next_page_token) = app::list_notifications(
            &self.pool,
            &r.customer_id,
            &r.order_id,
            r.page_size,
            &r.page_token,
            &caller,
        )
        .await?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: notifications.into_iter().map(to_pb).collect(),
            next_page_token,
        }))
    }
}
