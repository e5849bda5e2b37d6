#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shop_runtime::skeleton::main::<order_service::startup::Orders>().await
}
