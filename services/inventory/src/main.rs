use inventory_service::config::Settings;
use inventory_service::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = shop_telemetry::init("inventory-service", "info");
    let settings = Settings::from_env()?;
    let shutdown = shop_runtime::shutdown::on_signal();
    let app = Application::build(settings, &shutdown).await?;
    tracing::info!(addr = %app.local_addr(), "inventory-service listening.");
    app.run(shutdown).await
}
