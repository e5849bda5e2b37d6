use payment_service::config::Settings;
use payment_service::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = shop_telemetry::init("payment-service", "info");
    let settings = Settings::from_env()?;
    let shutdown = shop_runtime::shutdown::on_signal();
    let app = Application::build(settings, &shutdown).await?;
    tracing::info!(addr = %app.local_addr(), "payment-service listening.");
    app.run(shutdown).await
}
