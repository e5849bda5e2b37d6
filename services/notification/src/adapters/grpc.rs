//! The `NotificationService` gRPC API. Errors become statuses here and nowhere else.

use chrono::{DateTime, Utc};
use shop_proto::notification::v1 as pb;
use shop_proto::notification::v1::notification_service_server::NotificationService;
use shop_runtime::status;
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::app::{self, NotificationError};
use crate::domain::{DeliveryStatus, Notification};

/// The gRPC API over the notification database.
#[derive(Clone, Debug)]
pub struct NotificationApi {
    pub pool: PgPool,
}

impl From<NotificationError> for Status {
    fn from(error: NotificationError) -> Self {
        match error {
            NotificationError::Invalid(violations) => violations.into(),
            NotificationError::Unexpected(e) => status::internal(&e),
        }
    }
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
    pb::Notification {
        notification_id: notification.notification_id.to_string(),
        order_id: notification.order_id,
        customer_id: notification.customer_id,
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
        let r = request.into_inner();
        let (notifications, next_page_token) = app::list_notifications(
            &self.pool,
            &r.customer_id,
            &r.order_id,
            r.page_size,
            &r.page_token,
        )
        .await?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: notifications.into_iter().map(to_pb).collect(),
            next_page_token,
        }))
    }
}
