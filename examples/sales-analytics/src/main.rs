use sales_analytics::config::Settings;
use sales_analytics::report;
use sales_analytics::startup::{self, Subscriber};

const USAGE: &str = "usage: sales-analytics [serve | migrate | report]

  serve    consume order events into the database and serve /metrics until SIGTERM (default)
  migrate  create or upgrade the database, then exit
  report   print revenue and units per sku from the database, then exit

Settings are environment variables; see examples/sales-analytics/src/config.rs.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    if matches!(command.as_str(), "-h" | "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    // Logs go to stdout: not for `report`, whose output is the table.
    let _telemetry = (command != "report").then(|| shop_telemetry::init("sales-analytics", "info"));
    let settings = Settings::from_env()?;
    let shutdown = shop_runtime::shutdown::on_signal();
    match command.as_str() {
        "serve" => {
            let subscriber = Subscriber::build(&settings, &shutdown).await?;
            tracing::info!(
                metrics = %subscriber.metrics_addr(),
                group = %settings.consumer_group,
                topic = %settings.order_events_topic,
                "sales-analytics consuming."
            );
            subscriber.run(shutdown).await
        }
        "migrate" => {
            startup::open_database(&settings, &shutdown)
                .await?
                .close()
                .await;
            Ok(())
        }
        "report" => {
            let pool = startup::open_database(&settings, &shutdown).await?;
            print!("{}", report::render(&report::totals(&pool).await?));
            Ok(())
        }
        other => anyhow::bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}
