//! The whole suite as real processes for one test: four fresh databases, fresh topics (with
//! their dead-letter topics: the broker may create nothing on first use), the four services
//! started through [`SuiteProcesses`], clients, and what a fault test needs around them: seeding,
//! a steady stream of orders, waiting for the saga to settle, and the cross-database audit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use shop_proto::common::v1::Money;
use shop_proto::inventory::v1 as inventory;
use shop_proto::order::v1 as order;
use shop_proto::payment::v1 as payment;
use shop_testkit::{TestDb, TestKafka};

use crate::audit::{AuditReport, Databases, audit};
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
        let mut databases = Vec::new();
        let mut urls = HashMap::new();
        for service in Service::ALL {
            let db = TestDb::create().await;
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

    /// Waits until the saga has settled (no order PENDING, every outbox drained, and the
    /// cross-database audit clean: every consumer caught up), up to `patience`; returns how long
    /// that took and the clean report.
    ///
    /// # Errors
    /// When it has not settled in time, with what was left and the audit's violations.
    pub async fn settle(&self, patience: Duration) -> anyhow::Result<(Duration, AuditReport)> {
        let started = Instant::now();
        loop {
            let mut outboxes = 0;
            for pool in self.dbs.all() {
                let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM eventing_outbox")
                    .fetch_one(pool)
                    .await?;
                outboxes += rows;
            }
            let report = self.audit().await?;
            if outboxes == 0 && report.violations.is_empty() {
                return Ok((started.elapsed(), report));
            }
            if started.elapsed() >= patience {
                anyhow::bail!(
                    "not settled after {patience:?}: {} order(s) pending, {outboxes} event(s) in outboxes, {} violation(s):\n{}",
                    report.pending,
                    report.violations.len(),
                    report.violations.join("\n")
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
