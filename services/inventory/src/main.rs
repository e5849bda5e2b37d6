use inventory_service::config::Settings;
use inventory_service::startup::{self, Application};
use shop_runtime::service::Command;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = Command::from_args("inventory-service")?;
    let _telemetry = shop_telemetry::init("inventory-service", "info");
    let settings = Settings::from_env()?;
    let shutdown = shop_runtime::shutdown::on_signal();
    if command == Command::Migrate {
        shop_runtime::service::migrate(&settings.database_url, &startup::MIGRATIONS, &shutdown)
            .await?;
        tracing::info!("inventory-service database migrated.");
        return Ok(());
    }
    let app = Application::build(settings, &shutdown).await?;
    tracing::info!(addr = %app.local_addr(), "inventory-service listening.");
    app.run(shutdown).await
}
