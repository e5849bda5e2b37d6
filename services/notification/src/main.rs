#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shop_runtime::skeleton::main::<notification_service::startup::Notifications>().await
}
