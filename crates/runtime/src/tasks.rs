use std::future::Future;
use std::pin::Pin;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A long-running part of a service (gRPC server, outbox relay, a consumer).
pub type Task = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Runs a service's tasks until `shutdown` is cancelled, then waits for each to drain. If one
/// task fails, the others are told to stop too and the first failure is returned: a service
/// whose relay or consumer died must not keep answering RPCs as if it were whole.
///
/// # Errors
/// The first task failure.
pub async fn run_until_stopped(
    tasks: Vec<(&'static str, Task)>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut set = JoinSet::new();
    for (name, task) in tasks {
        set.spawn(async move { (name, task.await) });
    }
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        let (name, result) = match joined {
            Ok(outcome) => outcome,
            Err(join_error) => ("task", Err(anyhow::anyhow!("panicked: {join_error}"))),
        };
        match result {
            Ok(()) if shutdown.is_cancelled() => tracing::info!(task = name, "Stopped."),
            Ok(()) => {
                tracing::error!(task = name, "Stopped unexpectedly; stopping the service.");
                first_error.get_or_insert_with(|| anyhow::anyhow!("{name} stopped unexpectedly"));
                shutdown.cancel();
            }
            Err(error) => {
                tracing::error!(task = name, error = ?error, "Failed; stopping the service.");
                first_error.get_or_insert(error.context(name));
                shutdown.cancel();
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
