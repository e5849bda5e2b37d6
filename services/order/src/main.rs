use order_service::config::Settings;
use order_service::startup::{self, Application};
use shop_runtime::service::Command;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = Command::from_args("order-service")?;
    let _telemetry = shop_telemetry::init("order-service", "info");
    let settings = Settings::from_env()?;
    let shutdown = shop_runtime::shutdown::on_signal();
    if command == Command::Migrate {
        shop_runtime::service::migrate(&settings.database_url, &startup::MIGRATIONS, &shutdown)
            .await?;
        tracing::info!("order-service database migrated.");
        return Ok(());
    }
    let app = Application::build(settings, &shutdown).await?;
    tracing::info!(addr = %app.local_addr(), "order-service listening.");
    app.run(shutdown).await
}
