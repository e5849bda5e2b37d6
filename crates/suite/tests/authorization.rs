//! Who may call what: every method of the four services, called over real gRPC against the
//! services as real processes (configured through their environment, as deployed), by every kind
//! of caller, with the status code each must get:
//!
//! - no token, a token whose signature does not verify, an expired one, one for another
//!   audience: `UNAUTHENTICATED`, always with the same message;
//! - the customer the data is about, another customer, an operator, a service identity
//!   (`order-service`): what the method's policy says, `PERMISSION_DENIED` with a fixed message
//!   when the request alone shows the caller may not, `NOT_FOUND` (the very answer for an id that
//!   does not exist) when the resource found by its id is another customer's.
//!
//! The matrix names every method of the published contracts: a method added without a row here
//! fails [`the_matrix_covers_every_method_of_every_service`]. Refused calls change nothing: the
//! data they aimed at is checked afterwards.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use shop_proto::common::v1::Money;
use shop_proto::inventory::v1 as inventory;
use shop_proto::notification::v1 as notification;
use shop_proto::order::v1 as order;
use shop_proto::payment::v1 as payment;
use shop_runtime::auth::{PERMISSION_DENIED_MESSAGE, UNAUTHENTICATED_MESSAGE};
use shop_suite::clients::Clients;
use shop_suite::harness::{ProcessSuite, eur};
use shop_testkit::auth::AUDIENCE;
use shop_testkit::{Bearer, TestKafka, TokenIssuer, test_auth};
use tonic::{Code, Status};

/// The kinds of caller, the matrix's columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Anonymous,
    ForgedSignature,
    Expired,
    OtherAudience,
    /// Alice, whose orders, account, payment and notifications the requests are about.
    CustomerSelf,
    /// Bob, another customer.
    OtherCustomer,
    Operator,
    /// The order service's own identity.
    Service,
}

const EVERYONE: [Who; 8] = [
    Who::Anonymous,
    Who::ForgedSignature,
    Who::Expired,
    Who::OtherAudience,
    Who::CustomerSelf,
    Who::OtherCustomer,
    Who::Operator,
    Who::Service,
];

/// What a call answered: its code, and for a refusal its message.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    code: Code,
    message: String,
}

fn answer<T>(result: Result<tonic::Response<T>, Status>) -> Answer {
    match result {
        Ok(_) => Answer {
            code: Code::Ok,
            message: String::new(),
        },
        Err(status) => Answer {
            code: status.code(),
            message: status.message().to_owned(),
        },
    }
}

struct World {
    suite: ProcessSuite,
    alice: String,
    bob: String,
    sku: String,
    /// Alice's confirmed orders: one to read, one to cancel per caller allowed to.
    orders: Vec<String>,
}

impl World {
    fn token(&self, who: Who) -> Bearer {
        let auth = test_auth();
        let issuer = auth.issuer();
        match who {
            Who::Anonymous => Bearer::anonymous(),
            Who::ForgedSignature => Bearer::new(&issuer.impostor().customer(&self.alice)),
            Who::Expired => {
                let mut claims = issuer.claims(&self.alice, &["customer"], Duration::ZERO);
                claims.nbf -= 7200;
                claims.iat -= 7200;
                claims.exp -= 3600;
                Bearer::new(&issuer.sign(&claims))
            }
            Who::OtherAudience => {
                let mut claims =
                    issuer.claims(&self.alice, &["customer"], Duration::from_secs(600));
                claims.aud = format!("not-{AUDIENCE}");
                Bearer::new(&issuer.sign(&claims))
            }
            Who::CustomerSelf => Bearer::new(&auth.customer(&self.alice)),
            Who::OtherCustomer => Bearer::new(&auth.customer(&self.bob)),
            Who::Operator => Bearer::new(&auth.operator()),
            Who::Service => Bearer::new(&auth.service("order-service")),
        }
    }

    fn clients(&self, who: Who) -> Clients {
        self.suite.clients.with_bearer(self.token(who))
    }
}

async fn world() -> World {
    shop_telemetry::init_for_tests();
    let mut suite = ProcessSuite::start(TestKafka::start(), Vec::new())
        .await
        .unwrap();
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (alice, bob, sku) = (
        format!("alice-{run}"),
        format!("bob-{run}"),
        format!("AUTH-{run}"),
    );
    suite.product(&sku, 100, 1000).await.unwrap();
    suite.account(&alice, 100_000).await.unwrap();
    suite.account(&bob, 100_000).await.unwrap();
    let mut world = World {
        suite,
        alice,
        bob,
        sku,
        orders: Vec::new(),
    };
    // Alice's orders, placed by Alice herself; the order service prices them by calling
    // inventory with its own token.
    let mut as_alice = world.clients(Who::CustomerSelf);
    for n in 0..3 {
        let placed = as_alice
            .order
            .place_order(order::PlaceOrderRequest {
                idempotency_key: format!("seed-{n}"),
                customer_id: world.alice.clone(),
                lines: vec![order::LineRequest {
                    sku: world.sku.clone(),
                    quantity: 1,
                }],
            })
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        world.orders.push(placed.order_id);
    }
    // Confirmed, paid and notified, so every read has something to show.
    let mut operator = world.clients(Who::Operator);
    for id in &world.orders {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let confirmed = operator
                .order
                .get_order(order::GetOrderRequest {
                    order_id: id.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .order
                .is_some_and(|o| o.status() == order::OrderStatus::Confirmed);
            let notified = !operator
                .notification
                .list_notifications(notification::ListNotificationsRequest {
                    order_id: id.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .notifications
                .is_empty();
            if confirmed && notified {
                break;
            }
            assert!(Instant::now() < deadline, "order {id} did not confirm");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    world
}

/// The methods of the four services, as the published contracts declare them.
fn contract_methods() -> BTreeSet<String> {
    let pool = prost_reflect::DescriptorPool::decode(shop_proto::FILE_DESCRIPTOR_SET).unwrap();
    pool.services()
        .filter(|s| s.full_name().starts_with("shop."))
        .flat_map(|s| {
            s.methods()
                .map(|m| format!("{}/{}", s.full_name(), m.name()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The matrix's rows: a method, and what each kind of authenticated caller gets (the four
/// unauthenticated kinds always get UNAUTHENTICATED).
struct Row {
    method: &'static str,
    customer_self: Code,
    other_customer: Code,
    operator: Code,
    service: Code,
}

const ROWS: [Row; 27] = {
    use Code::{NotFound, Ok, PermissionDenied as Denied};
    const fn row(
        method: &'static str,
        customer_self: Code,
        other_customer: Code,
        operator: Code,
        service: Code,
    ) -> Row {
        Row {
            method,
            customer_self,
            other_customer,
            operator,
            service,
        }
    }
    [
        row(
            "shop.order.v1.OrderService/PlaceOrder",
            Ok,
            Denied,
            Ok,
            Denied,
        ),
        row(
            "shop.order.v1.OrderService/GetOrder",
            Ok,
            NotFound,
            Ok,
            Denied,
        ),
        row(
            "shop.order.v1.OrderService/ListOrders",
            Ok,
            Denied,
            Ok,
            Denied,
        ),
        row(
            "shop.order.v1.OrderService/CancelOrder",
            Ok,
            NotFound,
            Ok,
            Denied,
        ),
        row(
            "shop.inventory.v1.InventoryService/UpsertProduct",
            Denied,
            Denied,
            Ok,
            Denied,
        ),
        row(
            "shop.inventory.v1.InventoryService/GetProduct",
            Ok,
            Ok,
            Ok,
            Ok,
        ),
        row(
            "shop.inventory.v1.InventoryService/ListProducts",
            Ok,
            Ok,
            Ok,
            Ok,
        ),
        row(
            "shop.inventory.v1.InventoryService/AdjustStock",
            Denied,
            Denied,
            Ok,
            Denied,
        ),
        row(
            "shop.inventory.v1.InventoryService/GetReservation",
            Denied,
            Denied,
            Ok,
            Denied,
        ),
        // The admin API (its own port): operators only, whatever the call.
        row(
            "shop.admin.v1.AdminService/Describe",
            Denied,
            Denied,
            Ok,
            Denied,
        ),
        row(
            "shop.admin.v1.AdminService/ListDeadLetters",
            Denied,
            Denied,
            Ok,
            Denied,
        ),
        row(
            "shop.admin.v1.AdminService/GetDeadLetter",
            Denied,
            Denied,
            NotFound,
            Denied,
        ),
        row(
            "shop.admin.v1.AdminService/ReplayDeadLetters",
            Denied,
            Denied,
            Ok,
            Denied,
        ),
        row(
            "shop.admin.v1.AdminService/RepublishRecords",
            Denied,
            Denied,
            Ok,
            Denied,
        ),
        row(
            "shop.admin.v1.AdminService/PurgeDeadLetters",
            Denied,
            Denied,
            Ok,
            Denied,
        ),
        row(
            "shop.admin.v1.AdminService/GetOutboxStatus",
            Denied,
            Denied,
            Ok,
            Denied,
        ),
        row(
            "shop.admin.v1.AdminService/RetryParked",
            Denied,
            Denied,
            Ok,
            Denied,
        ),
        row(
            "shop.admin.v1.AdminService/DropParked",
            Denied,
            Denied,
            Ok,
            Denied,
        ),
        row(
            "shop.admin.v1.AdminService/ListAuditRecords",
            Denied,
            Denied,
            Ok,
            Denied,
        ),
        row(
            "shop.payment.v1.PaymentService/OpenAccount",
            Denied,
            Denied,
            Ok,
            Denied,
        ),
        row(
            "shop.payment.v1.PaymentService/Deposit",
            Denied,
            Denied,
            Ok,
            Denied,
        ),
        row(
            "shop.payment.v1.PaymentService/GetAccount",
            Ok,
            Denied,
            Ok,
            Denied,
        ),
        row(
            "shop.payment.v1.PaymentService/GetPayment",
            Ok,
            NotFound,
            Ok,
            Denied,
        ),
        // By customer id, and by order id (another's order: an empty page, checked below).
        row(
            "shop.notification.v1.NotificationService/ListNotifications",
            Ok,
            Denied,
            Ok,
            Denied,
        ),
        row(
            "shop.notification.v1.NotificationService/ListNotifications#order",
            Ok,
            Ok,
            Ok,
            Denied,
        ),
        // Health and reflection are open to everyone (checked separately below).
        row("grpc.health.v1.Health/Check", Ok, Ok, Ok, Ok),
        row(
            "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            Ok,
            Ok,
            Ok,
            Ok,
        ),
    ]
};

impl Row {
    fn expected(&self, who: Who) -> Code {
        match who {
            Who::Anonymous | Who::ForgedSignature | Who::Expired | Who::OtherAudience
                if !self.method.starts_with("grpc.") =>
            {
                Code::Unauthenticated
            }
            Who::Anonymous | Who::ForgedSignature | Who::Expired | Who::OtherAudience => Code::Ok,
            Who::CustomerSelf => self.customer_self,
            Who::OtherCustomer => self.other_customer,
            Who::Operator => self.operator,
            Who::Service => self.service,
        }
    }
}

#[test]
fn the_matrix_covers_every_method_of_every_service() {
    let rows: BTreeSet<String> = ROWS
        .iter()
        .map(|r| r.method.split('#').next().unwrap().to_owned())
        .filter(|m| m.starts_with("shop."))
        .collect();
    assert_eq!(
        rows,
        contract_methods(),
        "every method of the contracts has a row of the authorisation matrix, and no row is stale"
    );
}

/// What the mutating calls aimed at, to check afterwards that only the allowed ones happened.
#[derive(Default)]
struct Effects {
    /// Alice's orders left for the callers allowed to cancel.
    cancel: Vec<String>,
    /// The skus created with UpsertProduct, by whom.
    products: Vec<(Who, String)>,
    /// The accounts opened with OpenAccount, by whom.
    accounts: Vec<(Who, String)>,
}

/// Calls an admin API method (on payment's admin port) as `who`. The mutating ones select
/// nothing or run dry, so an allowed call changes nothing either.
async fn call_admin(world: &World, method: &str, who: Who) -> Answer {
    use shop_proto::admin::v1 as admin;
    let url = world
        .suite
        .processes
        .admin_url(shop_suite::processes::Service::Payment, 0);
    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = admin::admin_service_client::AdminServiceClient::with_interceptor(
        channel,
        world.token(who),
    );
    let nothing = || {
        Some(admin::DeadLetterFilter {
            event_ids: vec!["no-such-event".into()],
            ..Default::default()
        })
    };
    let all = || {
        Some(admin::ParkedSelection {
            all: true,
            ..Default::default()
        })
    };
    match method {
        "shop.admin.v1.AdminService/Describe" => {
            answer(c.describe(admin::DescribeRequest {}).await)
        }
        "shop.admin.v1.AdminService/ListDeadLetters" => answer(
            c.list_dead_letters(admin::ListDeadLettersRequest::default())
                .await,
        ),
        "shop.admin.v1.AdminService/GetDeadLetter" => answer(
            c.get_dead_letter(admin::GetDeadLetterRequest {
                consumer: "payment-service".into(),
                event_id: "no-such-event".into(),
            })
            .await,
        ),
        "shop.admin.v1.AdminService/ReplayDeadLetters" => answer(
            c.replay_dead_letters(admin::ReplayDeadLettersRequest {
                filter: nothing(),
                dry_run: true,
                ..Default::default()
            })
            .await,
        ),
        "shop.admin.v1.AdminService/RepublishRecords" => answer(
            c.republish_records(admin::RepublishRecordsRequest {
                records: Vec::new(),
                dry_run: true,
            })
            .await,
        ),
        "shop.admin.v1.AdminService/PurgeDeadLetters" => answer(
            c.purge_dead_letters(admin::PurgeDeadLettersRequest {
                filter: nothing(),
                dry_run: true,
            })
            .await,
        ),
        "shop.admin.v1.AdminService/GetOutboxStatus" => {
            answer(c.get_outbox_status(admin::GetOutboxStatusRequest {}).await)
        }
        "shop.admin.v1.AdminService/RetryParked" => answer(
            c.retry_parked(admin::RetryParkedRequest {
                selection: all(),
                dry_run: true,
            })
            .await,
        ),
        "shop.admin.v1.AdminService/DropParked" => answer(
            c.drop_parked(admin::DropParkedRequest {
                selection: all(),
                dry_run: true,
            })
            .await,
        ),
        "shop.admin.v1.AdminService/ListAuditRecords" => answer(
            c.list_audit_records(admin::ListAuditRecordsRequest::default())
                .await,
        ),
        other => panic!("no call for {other}"),
    }
}

/// Calls `method` as `who` and returns the answer. Mutating calls aim at data of their own per
/// caller where they are allowed to succeed (a new idempotency key, a new account, a new
/// deposit, the next of Alice's orders to cancel), so every cell is decided by the policy alone.
async fn call(world: &World, method: &str, who: Who, effects: &mut Effects) -> Answer {
    let mut c = world.clients(who);
    let tag = format!("{who:?}-{}", uuid::Uuid::new_v4().simple());
    let alice = world.alice.clone();
    let order_id = world.orders[0].clone();
    match method {
        "shop.order.v1.OrderService/PlaceOrder" => answer(
            c.order
                .place_order(order::PlaceOrderRequest {
                    idempotency_key: tag,
                    customer_id: alice,
                    lines: vec![order::LineRequest {
                        sku: world.sku.clone(),
                        quantity: 1,
                    }],
                })
                .await,
        ),
        "shop.order.v1.OrderService/GetOrder" => {
            answer(c.order.get_order(order::GetOrderRequest { order_id }).await)
        }
        "shop.order.v1.OrderService/ListOrders" => answer(
            c.order
                .list_orders(order::ListOrdersRequest {
                    customer_id: alice,
                    ..Default::default()
                })
                .await,
        ),
        "shop.order.v1.OrderService/CancelOrder" => {
            // Those allowed to cancel each cancel an order of their own; the refused aim at
            // the last one, which must still be confirmed at the end.
            let allowed = matches!(who, Who::CustomerSelf | Who::Operator);
            let order_id = if allowed {
                effects.cancel.pop().expect("an order left to cancel")
            } else {
                world.orders[2].clone()
            };
            answer(
                c.order
                    .cancel_order(order::CancelOrderRequest { order_id })
                    .await,
            )
        }
        "shop.inventory.v1.InventoryService/UpsertProduct" => {
            let sku = format!("NEW-{}", &tag[tag.len() - 8..]);
            effects.products.push((who, sku.clone()));
            answer(
                c.inventory
                    .upsert_product(inventory::UpsertProductRequest {
                        sku,
                        name: "new".into(),
                        unit_price: eur(100),
                    })
                    .await,
            )
        }
        "shop.inventory.v1.InventoryService/GetProduct" => answer(
            c.inventory
                .get_product(inventory::GetProductRequest {
                    sku: world.sku.clone(),
                })
                .await,
        ),
        "shop.inventory.v1.InventoryService/ListProducts" => answer(
            c.inventory
                .list_products(inventory::ListProductsRequest {
                    skus: vec![world.sku.clone()],
                    ..Default::default()
                })
                .await,
        ),
        "shop.inventory.v1.InventoryService/AdjustStock" => answer(
            c.inventory
                .adjust_stock(inventory::AdjustStockRequest {
                    sku: world.sku.clone(),
                    delta: 1,
                    reason: tag,
                })
                .await,
        ),
        "shop.payment.v1.PaymentService/OpenAccount" => {
            let customer_id = format!("new-{}", &tag[tag.len() - 12..]);
            effects.accounts.push((who, customer_id.clone()));
            answer(
                c.payment
                    .open_account(payment::OpenAccountRequest {
                        customer_id,
                        currency: "EUR".into(),
                        frozen: false,
                    })
                    .await,
            )
        }
        "shop.payment.v1.PaymentService/Deposit" => answer(
            c.payment
                .deposit(payment::DepositRequest {
                    customer_id: alice,
                    amount: Some(Money {
                        amount_minor: 1,
                        currency: "EUR".into(),
                    }),
                    deposit_id: tag,
                })
                .await,
        ),
        "shop.payment.v1.PaymentService/GetAccount" => answer(
            c.payment
                .get_account(payment::GetAccountRequest { customer_id: alice })
                .await,
        ),
        "shop.payment.v1.PaymentService/GetPayment" => answer(
            c.payment
                .get_payment(payment::GetPaymentRequest { order_id })
                .await,
        ),
        "shop.notification.v1.NotificationService/ListNotifications" => answer(
            c.notification
                .list_notifications(notification::ListNotificationsRequest {
                    customer_id: alice,
                    ..Default::default()
                })
                .await,
        ),
        "shop.notification.v1.NotificationService/ListNotifications#order" => answer(
            c.notification
                .list_notifications(notification::ListNotificationsRequest {
                    order_id,
                    ..Default::default()
                })
                .await,
        ),
        "shop.inventory.v1.InventoryService/GetReservation" => answer(
            c.inventory
                .get_reservation(inventory::GetReservationRequest { order_id })
                .await,
        ),
        admin if admin.starts_with("shop.admin.v1.AdminService/") => {
            call_admin(world, admin, who).await
        }
        "grpc.health.v1.Health/Check" => {
            let url = world
                .suite
                .processes
                .url(shop_suite::processes::Service::Order, 0);
            let channel = tonic::transport::Channel::from_shared(url)
                .unwrap()
                .connect()
                .await
                .unwrap();
            let channel =
                tonic::service::interceptor::InterceptedService::new(channel, world.token(who));
            answer(
                tonic_health::pb::health_client::HealthClient::new(channel)
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await,
            )
        }
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo" => {
            // Reflection asks for no token (grpcurl list/describe work anonymously): whatever a
            // caller sends, the service list comes back.
            let url = world
                .suite
                .processes
                .url(shop_suite::processes::Service::Order, 0);
            match shop_testkit::reflected_services(&url).await {
                Ok((v1, _)) if v1.contains(&"shop.order.v1.OrderService".to_owned()) => Answer {
                    code: Code::Ok,
                    message: String::new(),
                },
                other => panic!("reflection: {other:?}"),
            }
        }
        other => panic!("no call for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_method_answers_every_kind_of_caller_as_its_policy_says() {
    let world = world().await;
    let mut effects = Effects {
        cancel: vec![world.orders[1].clone(), world.orders[0].clone()],
        ..Effects::default()
    };
    // The refusals come first, so the allowed cancels (which change Alice's orders) come last.
    let mut order_of_callers = EVERYONE.to_vec();
    order_of_callers.sort_by_key(|w| matches!(w, Who::CustomerSelf | Who::Operator));
    let mut failures = Vec::new();
    let mut cells = 0;
    for row in &ROWS {
        for who in &order_of_callers {
            let got = call(&world, row.method, *who, &mut effects).await;
            cells += 1;
            let expected = row.expected(*who);
            if got.code != expected {
                failures.push(format!(
                    "{} as {who:?}: expected {expected:?}, got {got:?}",
                    row.method
                ));
                continue;
            }
            // Refusals say nothing about why, or about the data.
            let message_ok = match got.code {
                Code::Unauthenticated => got.message == UNAUTHENTICATED_MESSAGE,
                Code::PermissionDenied => got.message == PERMISSION_DENIED_MESSAGE,
                _ => true,
            };
            if !message_ok {
                failures.push(format!(
                    "{} as {who:?}: the refusal says {:?}",
                    row.method, got.message
                ));
            }
        }
    }
    println!("{cells} cells of the authorisation matrix checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let mut operator = world.clients(Who::Operator);
    // NOT_FOUND for another customer's order is the very answer for an order that does not
    // exist: Bob cannot tell Alice's order from no order.
    let mut bob = world.clients(Who::OtherCustomer);
    let missing = uuid::Uuid::now_v7().to_string();
    let for_missing = answer(
        bob.order
            .get_order(order::GetOrderRequest {
                order_id: missing.clone(),
            })
            .await,
    );
    let for_alices = answer(
        bob.order
            .get_order(order::GetOrderRequest {
                order_id: world.orders[2].clone(),
            })
            .await,
    );
    assert_eq!(for_missing.code, Code::NotFound);
    assert_eq!(
        for_alices.message.replace(&world.orders[2], "ID"),
        for_missing.message.replace(&missing, "ID"),
        "another customer's order and no order at all answer alike"
    );
    // Bob listing the notifications of Alice's order sees an empty page, as for an order
    // without notifications; Alice sees hers.
    for (who, expected_empty) in [(Who::OtherCustomer, true), (Who::CustomerSelf, false)] {
        let page = world
            .clients(who)
            .notification
            .list_notifications(notification::ListNotificationsRequest {
                order_id: world.orders[2].clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.notifications.is_empty(), expected_empty, "{who:?}");
        assert!(page.next_page_token.is_empty());
    }

    // The refused calls changed nothing: the order they aimed at is still confirmed, the
    // catalog and Alice's balance moved only by the operator's calls.
    let target = operator
        .order
        .get_order(order::GetOrderRequest {
            order_id: world.orders[2].clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(target.status(), order::OrderStatus::Confirmed);
    for id in &world.orders[..2] {
        let cancelled = operator
            .order
            .get_order(order::GetOrderRequest {
                order_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        assert_eq!(cancelled.status(), order::OrderStatus::Cancelled, "{id}");
    }
    for (who, sku) in &effects.products {
        let exists = operator
            .inventory
            .get_product(inventory::GetProductRequest { sku: sku.clone() })
            .await
            .is_ok();
        assert_eq!(exists, *who == Who::Operator, "product {sku} of {who:?}");
    }
    for (who, customer_id) in &effects.accounts {
        let exists = operator
            .payment
            .get_account(payment::GetAccountRequest {
                customer_id: customer_id.clone(),
            })
            .await
            .is_ok();
        assert_eq!(
            exists,
            *who == Who::Operator,
            "account {customer_id} of {who:?}"
        );
    }
    let orders_of_alice = operator
        .order
        .list_orders(order::ListOrdersRequest {
            customer_id: world.alice.clone(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .orders;
    // Three seeded, one placed by Alice and one by the operator for her; none by anyone else.
    assert_eq!(orders_of_alice.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_and_reflection_answer_without_a_token_on_every_service() {
    shop_telemetry::init_for_tests();
    let suite = ProcessSuite::start(TestKafka::start(), Vec::new())
        .await
        .unwrap();
    for service in shop_suite::processes::Service::ALL {
        let url = suite.processes.url(service, 0);
        // Health: anonymous, as Kubernetes' probes are.
        shop_suite::clients::wait_serving(&url, Duration::from_secs(5))
            .await
            .unwrap();
        let (v1, v1alpha) = shop_testkit::reflected_services(&url).await.unwrap();
        let own = format!(
            "shop.{0}.v1.{1}Service",
            service.name(),
            service.name()[..1].to_uppercase() + &service.name()[1..]
        );
        assert!(
            v1.contains(&own) && v1alpha.contains(&own),
            "{v1:?} {v1alpha:?}"
        );
    }
}

/// A token signed by a key the services do not know, under a key id they do: the signature
/// check itself refuses it, not a missing key.
#[test]
fn an_impostor_signs_under_the_real_key_id() {
    let issuer = test_auth().issuer();
    let impostor: TokenIssuer = issuer.impostor();
    assert_eq!(impostor.kid(), issuer.kid());
    assert_ne!(impostor.jwks(), issuer.jwks());
}
