use notification_service::config::Settings;
use notification_service::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = shop_telemetry::init("notification-service", "info");
    let settings = Settings::from_env()?;
    let shutdown = shop_runtime::shutdown::on_signal();
    let app = Application::build(settings, &shutdown).await?;
    tracing::info!(addr = %app.local_addr(), "notification-service listening.");
    app.run(shutdown).await
}
