//! The `PaymentService` gRPC API. Errors become statuses here and nowhere else.
//!
//! Who may call what (`shop_runtime::auth`; its one rule for PERMISSION_DENIED vs NOT_FOUND):
//!
//! | Method | Allowed | Refused |
//! | --- | --- | --- |
//! | `OpenAccount`, `Deposit` | an operator | anyone else: PERMISSION_DENIED |
//! | `GetAccount` | the customer named in the request; an operator | anyone else: PERMISSION_DENIED |
//! | `GetPayment` | the paying customer; an operator | another customer: NOT_FOUND, as for no payment; a service: PERMISSION_DENIED |

use chrono::{DateTime, Utc};
use shop_proto::common::v1::Money;
use shop_proto::payment::v1 as pb;
use shop_proto::payment::v1::payment_service_server::PaymentService;
use shop_runtime::auth::{Caller, Role};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::app;
use crate::domain::{Account, AccountStatus, Payment, PaymentStatus};

/// The gRPC API over the payment database.
#[derive(Clone, Debug)]
pub struct PaymentApi {
    pub pool: PgPool,
}

fn timestamp(at: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

fn account_to_pb(row: Account) -> pb::Account {
    let status = match row.status {
        Some(AccountStatus::Open) => pb::AccountStatus::Open,
        Some(AccountStatus::Frozen) => pb::AccountStatus::Frozen,
        None => pb::AccountStatus::Unspecified,
    };
    pb::Account {
        customer_id: row.customer_id,
        balance: Some(Money {
            amount_minor: row.balance_minor,
            currency: row.currency,
        }),
        status: status.into(),
        opened_at: timestamp(row.opened_at),
    }
}

fn payment_to_pb(row: Payment) -> pb::Payment {
    let status = match row.status {
        Some(PaymentStatus::Captured) => pb::PaymentStatus::Captured,
        Some(PaymentStatus::Declined) => pb::PaymentStatus::Declined,
        Some(PaymentStatus::Refunded) => pb::PaymentStatus::Refunded,
        Some(PaymentStatus::Cancelled) => pb::PaymentStatus::Cancelled,
        None => pb::PaymentStatus::Unspecified,
    };
    // A tombstone holds no money: its amount is unknown, not zero.
    let amount = (status != pb::PaymentStatus::Cancelled).then_some(Money {
        amount_minor: row.amount_minor,
        currency: row.currency,
    });
    pb::Payment {
        order_id: row.order_id,
        customer_id: row.customer_id,
        amount,
        status: status.into(),
        decline_reason: row.decline_reason.unwrap_or_default(),
        updated_at: timestamp(row.updated_at),
    }
}

#[tonic::async_trait]
impl PaymentService for PaymentApi {
    async fn open_account(
        &self,
        request: Request<pb::OpenAccountRequest>,
    ) -> Result<Response<pb::OpenAccountResponse>, Status> {
        Caller::of(&request)?.require_operator()?;
        let r = request.into_inner();
        let row = app::open_account(&self.pool, &r.customer_id, &r.currency, r.frozen).await?;
        Ok(Response::new(pb::OpenAccountResponse {
            account: Some(account_to_pb(row)),
        }))
    }

    async fn deposit(
        &self,
        request: Request<pb::DepositRequest>,
    ) -> Result<Response<pb::DepositResponse>, Status> {
        Caller::of(&request)?.require_operator()?;
        let r = request.into_inner();
        let amount = r
            .amount
            .as_ref()
            .map(|m| (m.amount_minor, m.currency.as_str()));
        let row = app::deposit(&self.pool, &r.customer_id, amount, &r.deposit_id).await?;
        Ok(Response::new(pb::DepositResponse {
            account: Some(account_to_pb(row)),
        }))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let caller = Caller::of(&request)?;
        let customer_id = request.into_inner().customer_id;
        caller.require_customer_or_operator(&customer_id)?;
        let row = app::get_account(&self.pool, &customer_id).await?;
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(account_to_pb(row)),
        }))
    }

    async fn get_payment(
        &self,
        request: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::GetPaymentResponse>, Status> {
        let caller = Caller::of(&request)?;
        caller.require_any(&[Role::Customer, Role::Operator])?;
        let row = app::get_payment(&self.pool, &request.into_inner().order_id, &caller).await?;
        Ok(Response::new(pb::GetPaymentResponse {
            payment: Some(payment_to_pb(row)),
        }))
    }
}
