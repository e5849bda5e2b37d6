#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shop_runtime::skeleton::main::<inventory_service::startup::Inventory>().await
}
