#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shop_runtime::skeleton::main::<payment_service::startup::Payments>().await
}
