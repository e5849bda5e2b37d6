//! The whole suite as real processes for one test: four fresh databases, fresh topics (with
//! their dead-letter topics: the broker may create nothing on first use), the four services
//! started through [`SuiteProcesses`], clients, and what a fault test needs around them: seeding,
//! a steady stream of orders, waiting for the saga to settle, and the cross-database audit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use shop_proto::common::v1::Money;
use shop_proto::inventory::v1 as inventory;
use shop_proto::order::v1 as order;
use shop_proto::order::v1::order_service_client::OrderServiceClient;
use shop_proto::payment::v1 as payment;
use shop_testkit::Authed;
use shop_testkit::{TestDb, TestKafka};

use crate::audit::{AuditReport, Databases, ExpectedDeadLetter, audit, audit_expecting};
use crate::clients::Clients;
use crate::processes::{Service, SuiteConfig, SuiteProcesses};

/// Partitions of each event topic: enough for two replicas to split them.
const PARTITIONS: i32 = 6;

/// A running suite with its infrastructure.
pub struct ProcessSuite {
    pub processes: SuiteProcesses,
    pub clients: Clients,
    pub dbs: Databases,
    pub config: SuiteConfig,
    /// The broker (kept alive as long as the suite; a test may take it down).
    pub kafka: TestKafka,
    _databases: Vec<TestDb>,
}

impl std::fmt::Debug for ProcessSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessSuite")
            .field("processes", &self.processes)
            .finish_non_exhaustive()
    }
}

pub fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: "EUR".into(),
    })
}

impl ProcessSuite {
    /// Fresh databases and topics on `kafka`, then the four services (one replica each), with
    /// `env` set for every process.
    ///
    /// # Errors
    /// When a service does not come up.
    pub async fn start(kafka: TestKafka, env: Vec<(String, String)>) -> anyhow::Result<Self> {
        Self::start_on(kafka, env, None).await
    }

    /// Like [`ProcessSuite::start`], with the four databases on the PostgreSQL server at
    /// `database_server` (e.g. a [`shop_testkit::PrivatePostgres`] the test may crash) instead
    /// of `DATABASE_URL`'s.
    ///
    /// # Errors
    /// When a service does not come up.
    pub async fn start_on(
        kafka: TestKafka,
        env: Vec<(String, String)>,
        database_server: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut databases = Vec::new();
        let mut urls = HashMap::new();
        for service in Service::ALL {
            let db = match database_server {
                Some(server) => TestDb::create_on(server).await,
                None => TestDb::create().await,
            };
            urls.insert(service, db.url());
            databases.push(db);
        }
        let config = SuiteConfig {
            kafka_bootstrap_servers: kafka.bootstrap_servers().to_owned(),
            databases: urls,
            order_events_topic: TestKafka::unique_topic("order"),
            inventory_events_topic: TestKafka::unique_topic("inventory"),
            payment_events_topic: TestKafka::unique_topic("payment"),
            group_suffix: uuid::Uuid::new_v4().simple().to_string(),
            otlp_endpoint: None,
            env,
            local: None,
        };
        for topic in [
            &config.order_events_topic,
            &config.inventory_events_topic,
            &config.payment_events_topic,
        ] {
            kafka.create_topic(topic, PARTITIONS).await;
        }
        for service in Service::ALL {
            kafka
                .create_topic(&format!("{}.dlq", config.group(service)), 1)
                .await;
        }
        let (processes, clients) = SuiteProcesses::start(config.clone()).await?;
        let pool = |i: usize| databases[i].pool.clone();
        let dbs = Databases {
            order: pool(0),
            inventory: pool(1),
            payment: pool(2),
            notification: pool(3),
        };
        Ok(Self {
            processes,
            clients,
            dbs,
            config,
            kafka,
            _databases: databases,
        })
    }

    /// A product with `stock` units at `price` (minor units, EUR).
    ///
    /// # Errors
    /// A refused call.
    pub async fn product(&mut self, sku: &str, price: i64, stock: i64) -> anyhow::Result<()> {
        self.clients
            .inventory
            .upsert_product(inventory::UpsertProductRequest {
                sku: sku.into(),
                name: sku.into(),
                unit_price: eur(price),
            })
            .await?;
        self.clients
            .inventory
            .adjust_stock(inventory::AdjustStockRequest {
                sku: sku.into(),
                delta: stock,
                reason: "initial".into(),
            })
            .await?;
        Ok(())
    }

    /// An open EUR account holding `deposit`.
    ///
    /// # Errors
    /// A refused call.
    pub async fn account(&mut self, customer: &str, deposit: i64) -> anyhow::Result<()> {
        self.clients
            .payment
            .open_account(payment::OpenAccountRequest {
                customer_id: customer.into(),
                currency: "EUR".into(),
                frozen: false,
            })
            .await?;
        if deposit > 0 {
            self.clients
                .payment
                .deposit(payment::DepositRequest {
                    customer_id: customer.into(),
                    amount: eur(deposit),
                    deposit_id: format!("{customer}-0"),
                })
                .await?;
        }
        Ok(())
    }

    /// Places orders at `per_second` for `duration` from a task of its own, each for one unit of
    /// one of `skus` by one of `customers` (round robin), retrying a refused or failed call as
    /// a client would (same idempotency key). Returns the ids of the orders placed.
    pub fn stream_orders(
        &self,
        per_second: u32,
        duration: Duration,
        customers: Vec<String>,
        skus: Vec<String>,
    ) -> tokio::task::JoinHandle<Vec<String>> {
        let mut client = self.clients.order.clone();
        tokio::spawn(async move {
            let period = Duration::from_secs_f64(1.0 / f64::from(per_second.max(1)));
            let started = Instant::now();
            let run = uuid::Uuid::new_v4().simple().to_string();
            let mut placed = Vec::new();
            let mut n: usize = 0;
            while started.elapsed() < duration {
                let due = started + period.mul_f64(n as f64);
                tokio::time::sleep_until(due.into()).await;
                let request = order::PlaceOrderRequest {
                    idempotency_key: format!("{run}-{n}"),
                    customer_id: customers[n % customers.len()].clone(),
                    lines: vec![order::LineRequest {
                        sku: skus[n % skus.len()].clone(),
                        quantity: 1,
                    }],
                };
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    match client.place_order(request.clone()).await {
                        Ok(response) => {
                            if let Some(order) = response.into_inner().order {
                                placed.push(order.order_id);
                            }
                            break;
                        }
                        Err(status) if Instant::now() < deadline => {
                            tracing::debug!(%status, "PlaceOrder failed; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(status) => panic!("PlaceOrder kept failing for a minute: {status}"),
                    }
                }
                n += 1;
            }
            placed
        })
    }

    /// Seeds the shop `spec` describes (its products and its customers' accounts) and returns
    /// who buys what, for [`ProcessSuite::stream_shop`].
    ///
    /// # Errors
    /// A refused call.
    pub async fn open_shop(&mut self, spec: &ShopSpec) -> anyhow::Result<Shop> {
        let shop = Shop {
            rich: (0..spec.rich).map(|i| format!("rich-{i}")).collect(),
            poor: (0..spec.poor).map(|i| format!("poor-{i}")).collect(),
            plentiful: (0..spec.plentiful).map(|i| format!("SKU-{i}")).collect(),
            scarce: (0..spec.scarce).map(|i| format!("SCARCE-{i}")).collect(),
            lines: spec.lines.max(1),
            burst: spec.burst.max(1),
            cancelling: spec.cancelling,
        };
        for sku in &shop.plentiful {
            self.product(sku, PRICE, 1_000_000).await?;
        }
        for sku in &shop.scarce {
            self.product(sku, PRICE, spec.scarce_stock).await?;
        }
        for customer in &shop.rich {
            self.account(customer, 100_000_000).await?;
        }
        for customer in &shop.poor {
            self.account(customer, spec.poor_deposit).await?;
        }
        Ok(shop)
    }

    /// Places orders of `shop` at about `per_second` for `duration` from a task of its own (in
    /// bursts of [`Shop::burst`] at once, each order on a task of its own), some of them
    /// cancelled by their customer shortly after (see [`Shop::order`]). Each call is retried as
    /// a client would (PlaceOrder with the same idempotency key) for up to a minute.
    pub fn stream_shop(
        &self,
        per_second: u32,
        duration: Duration,
        shop: &Shop,
    ) -> tokio::task::JoinHandle<StreamReport> {
        let client = self.clients.order.clone();
        let shop = shop.clone();
        tokio::spawn(async move {
            let burst = shop.burst;
            let tick = Duration::from_secs_f64(burst as f64 / f64::from(per_second.max(1)));
            let started = Instant::now();
            let run = uuid::Uuid::new_v4().simple().to_string();
            let mut tasks = tokio::task::JoinSet::new();
            let mut n: usize = 0;
            let mut ticks: u32 = 0;
            while started.elapsed() < duration {
                tokio::time::sleep_until((started + tick * ticks).into()).await;
                for _ in 0..burst {
                    let (request, cancel) = shop.order(n, &run);
                    tasks.spawn(place_and_maybe_cancel(client.clone(), request, cancel));
                    n += 1;
                }
                ticks += 1;
            }
            let mut report = StreamReport {
                keys: n,
                ..StreamReport::default()
            };
            while let Some(done) = tasks.join_next().await {
                let (order_id, cancelled) =
                    done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                report.orders.push(order_id);
                report.cancelled_by_customer += usize::from(cancelled);
            }
            report
        })
    }

    /// The topics `service` consumes.
    pub fn consumed_topics(&self, service: Service) -> Vec<String> {
        let c = &self.config;
        match service {
            Service::Order => vec![
                c.inventory_events_topic.clone(),
                c.payment_events_topic.clone(),
            ],
            Service::Inventory | Service::Payment | Service::Notification => {
                vec![c.order_events_topic.clone()]
            }
        }
    }

    /// Every consumer group's lag (records not yet committed) on every topic it consumes.
    ///
    /// # Errors
    /// When the broker does not answer.
    pub async fn lag(&self) -> anyhow::Result<Vec<(Service, String, i64)>> {
        let mut lags = Vec::new();
        for service in Service::ALL {
            for topic in self.consumed_topics(service) {
                let lag = self
                    .kafka
                    .group_lag(&self.config.group(service), &topic)
                    .await?;
                lags.push((service, topic, lag));
            }
        }
        Ok(lags)
    }

    /// Waits until every consumer group has committed every record of its topics; returns how
    /// long that took.
    ///
    /// # Errors
    /// When some group still lags after `patience`, with each lag.
    pub async fn wait_caught_up(&self, patience: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let lags = self.lag().await;
            if let Ok(lags) = &lags
                && lags.iter().all(|(_, _, lag)| *lag == 0)
            {
                return Ok(started.elapsed());
            }
            if started.elapsed() >= patience {
                anyhow::bail!("consumers still lag after {patience:?}: {lags:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until the saga has settled (no order PENDING, every outbox drained, and the
    /// cross-database audit clean: every consumer caught up), up to `patience`; returns how long
    /// that took and the clean report.
    ///
    /// # Errors
    /// When it has not settled in time, with what was left and the audit's violations.
    pub async fn settle(&self, patience: Duration) -> anyhow::Result<(Duration, AuditReport)> {
        self.settle_expecting(patience, &[]).await
    }

    /// [`settle`](Self::settle), for a test that made consumers give up on records on purpose:
    /// the audit accepts exactly those dead letters ([`audit_expecting`]).
    ///
    /// # Errors
    /// When it has not settled in time, with what was left and the audit's violations.
    pub async fn settle_expecting(
        &self,
        patience: Duration,
        expected: &[ExpectedDeadLetter],
    ) -> anyhow::Result<(Duration, AuditReport)> {
        let started = Instant::now();
        loop {
            let mut outboxes = 0;
            for pool in self.dbs.all() {
                let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM eventing_outbox")
                    .fetch_one(pool)
                    .await?;
                outboxes += rows;
            }
            let report = audit_expecting(&self.dbs, expected).await?;
            if outboxes == 0 && report.violations.is_empty() {
                return Ok((started.elapsed(), report));
            }
            if started.elapsed() >= patience {
                // The first violations say what broke; thousands of lines would bury them.
                let shown = 15.min(report.violations.len());
                let more = report.violations.len() - shown;
                anyhow::bail!(
                    "not settled after {patience:?}: {} order(s) pending, {outboxes} event(s) in outboxes, {} violation(s):\n{}{}",
                    report.pending,
                    report.violations.len(),
                    report.violations[..shown].join("\n"),
                    if more > 0 {
                        format!("\n... and {more} more")
                    } else {
                        String::new()
                    }
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The cross-database audit.
    ///
    /// # Errors
    /// Database errors.
    pub async fn audit(&self) -> anyhow::Result<AuditReport> {
        audit(&self.dbs).await
    }
}

/// Price of every product of a [`Shop`] (minor units, EUR).
pub const PRICE: i64 = 250;

/// What a [`Shop`] is made of.
#[derive(Clone, Debug)]
pub struct ShopSpec {
    /// Customers with far more money than they can spend.
    pub rich: usize,
    /// Customers holding `poor_deposit`: once it is spent, their orders are declined.
    pub poor: usize,
    pub poor_deposit: i64,
    /// Products with far more stock than can be sold.
    pub plentiful: usize,
    /// Products with `scarce_stock` units: once sold, their orders are rejected out of stock.
    pub scarce: usize,
    pub scarce_stock: i64,
    /// Lines per order (each of another plentiful product when more than one).
    pub lines: usize,
    /// Orders placed at once: bursts fill the consumers' batches.
    pub burst: usize,
    /// Whether some orders are cancelled by their customer shortly after being placed.
    pub cancelling: bool,
}

impl Default for ShopSpec {
    /// Eight rich and two poor customers (money for two orders each), three plentiful products
    /// and one with six units, one line per order, bursts of four, some cancellations.
    fn default() -> Self {
        Self {
            rich: 8,
            poor: 2,
            poor_deposit: 2 * PRICE + PRICE / 2,
            plentiful: 3,
            scarce: 1,
            scarce_stock: 6,
            lines: 1,
            burst: 4,
            cancelling: true,
        }
    }
}

/// Who buys what: the customers and products [`ProcessSuite::open_shop`] seeded.
#[derive(Clone, Debug)]
pub struct Shop {
    pub rich: Vec<String>,
    pub poor: Vec<String>,
    pub plentiful: Vec<String>,
    pub scarce: Vec<String>,
    pub lines: usize,
    pub burst: usize,
    pub cancelling: bool,
}

impl Shop {
    /// Order number `n` of a stream (idempotency key `<run>-<n>`), and whether its customer
    /// cancels it. Out of every ten: one by a poor customer (declined once their money is
    /// spent), two of a scarce product (rejected once it is sold out), one cancelled by its
    /// customer soon after, six that confirm.
    pub fn order(&self, n: usize, run: &str) -> (order::PlaceOrderRequest, bool) {
        let pick = |list: &[String], fallback: &[String]| {
            let list = if list.is_empty() { fallback } else { list };
            list[n % list.len()].clone()
        };
        let (customer, sku, cancel) = match n % 10 {
            3 => (
                pick(&self.poor, &self.rich),
                pick(&self.plentiful, &self.scarce),
                false,
            ),
            6 | 9 => (
                pick(&self.rich, &self.poor),
                pick(&self.scarce, &self.plentiful),
                false,
            ),
            7 => (
                pick(&self.rich, &self.poor),
                pick(&self.plentiful, &self.scarce),
                self.cancelling,
            ),
            _ => (
                pick(&self.rich, &self.poor),
                pick(&self.plentiful, &self.scarce),
                false,
            ),
        };
        let mut lines = vec![order::LineRequest { sku, quantity: 1 }];
        // More lines come from the plentiful products, in an order that alternates, so that
        // two orders lock the same rows in opposite orders if the services let them.
        for extra in 1..self.lines.min(self.plentiful.len()) {
            let sku = self.plentiful[(n + extra) % self.plentiful.len()].clone();
            if lines.iter().all(|l| l.sku != sku) {
                lines.push(order::LineRequest { sku, quantity: 1 });
            }
        }
        if n % 2 == 1 {
            lines.reverse();
        }
        (
            order::PlaceOrderRequest {
                idempotency_key: format!("{run}-{n}"),
                customer_id: customer,
                lines,
            },
            cancel,
        )
    }
}

/// What a stream of orders did.
#[derive(Clone, Debug, Default)]
pub struct StreamReport {
    /// The ids of the orders placed (one per idempotency key).
    pub orders: Vec<String>,
    /// How many idempotency keys were used.
    pub keys: usize,
    /// How many cancellations by a customer succeeded.
    pub cancelled_by_customer: usize,
}

/// How long a client keeps retrying a call that fails (a service killed over and over on a
/// loaded machine can take a minute to answer again).
const CLIENT_PATIENCE: Duration = Duration::from_secs(120);

/// Places `request` as a client does: a call that fails for a reason that may pass (the service
/// restarting, inventory slow) is retried under the same idempotency key, which makes it safe,
/// for up to [`CLIENT_PATIENCE`]. Returns the order id.
///
/// # Panics
/// When the order service refuses the order, or never answers within the patience.
pub async fn place(
    client: &mut OrderServiceClient<Authed>,
    request: &order::PlaceOrderRequest,
) -> String {
    let placed = with_patience(|| {
        let mut call = tonic::Request::new(request.clone());
        call.set_timeout(Duration::from_secs(15));
        // A clone per try (a handle on the same channel): the try's future owns it.
        let mut client = client.clone();
        async move { client.place_order(call).await }
    })
    .await;
    match placed {
        Ok(response) => match response.into_inner().order {
            Some(order) => order.order_id,
            None => panic!("PlaceOrder answered without an order"),
        },
        Err(status) => panic!("PlaceOrder {} failed: {status}", request.idempotency_key),
    }
}

/// Places `request` (retrying with the same key) and, if `cancel`, cancels it a moment later.
/// Returns the order id and whether the cancellation was accepted (an order the saga already
/// cancelled refuses it).
async fn place_and_maybe_cancel(
    mut client: OrderServiceClient<Authed>,
    request: order::PlaceOrderRequest,
    cancel: bool,
) -> (String, bool) {
    let order_id = place(&mut client, &request).await;
    if !cancel {
        return (order_id, false);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancelled = with_patience(|| {
        let mut call = tonic::Request::new(order::CancelOrderRequest {
            order_id: order_id.clone(),
        });
        call.set_timeout(Duration::from_secs(15));
        let mut client = client.clone();
        async move { client.cancel_order(call).await }
    })
    .await;
    match cancelled {
        Ok(_) => (order_id, true),
        // Cancelled already: by the saga, or by this very call when an earlier try committed
        // but its answer was lost.
        Err(status) if status.code() == tonic::Code::FailedPrecondition => (order_id, false),
        Err(status) => panic!("CancelOrder {order_id} failed: {status}"),
    }
}

/// Makes `call` again while it fails for a reason that may pass ([`retryable`]), for up to
/// [`CLIENT_PATIENCE`]; returns its answer or its last (or first non-retryable) refusal.
async fn with_patience<T, F>(mut call: impl FnMut() -> F) -> Result<T, tonic::Status>
where
    F: Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + CLIENT_PATIENCE;
    loop {
        match call().await {
            Err(status) if Instant::now() < deadline && retryable(&status) => {
                tracing::debug!(%status, "call failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            answer => return answer,
        }
    }
}

/// Whether a client would try the call again: the service was unreachable, overloaded or
/// failed inside (a crash, its database restarting), not a refusal of the request itself.
fn retryable(status: &tonic::Status) -> bool {
    !matches!(
        status.code(),
        tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
            | tonic::Code::NotFound
            | tonic::Code::AlreadyExists
            | tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
            | tonic::Code::Unimplemented
    )
}

impl Databases {
    /// The four pools.
    pub fn all(&self) -> [&sqlx::PgPool; 4] {
        [
            &self.order,
            &self.inventory,
            &self.payment,
            &self.notification,
        ]
    }
}

/// Refuses every debit of the accounts of customers `victim-*` with a permanent error (a
/// check violation), as a database bug or a mistaken constraint would: their payments are
/// dead-lettered until the cause is fixed ([`fix_the_cause`]).
///
/// # Panics
/// When the payment database refuses the trigger.
pub async fn refuse_victims_debits(payment: &sqlx::PgPool) {
    for statement in [
        "CREATE FUNCTION test_refuse_debits() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'debits of % refused (a fault the test injected)', OLD.customer_id \
         USING ERRCODE = 'check_violation'; END $$",
        "CREATE TRIGGER test_refuse_debits BEFORE UPDATE OF balance_minor ON accounts FOR EACH ROW \
         WHEN (OLD.customer_id LIKE 'victim-%' AND NEW.balance_minor < OLD.balance_minor) \
         EXECUTE FUNCTION test_refuse_debits()",
    ] {
        sqlx::query(statement).execute(payment).await.unwrap();
    }
}

/// Undoes [`refuse_victims_debits`]: the victims' debits go through again.
///
/// # Panics
/// When the trigger cannot be dropped.
pub async fn fix_the_cause(payment: &sqlx::PgPool) {
    sqlx::query("DROP TRIGGER test_refuse_debits ON accounts")
        .execute(payment)
        .await
        .unwrap();
}
