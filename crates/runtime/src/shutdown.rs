use tokio_util::sync::CancellationToken;

/// A token cancelled when the process receives SIGTERM (Kubernetes stopping a pod) or SIGINT
/// (Ctrl-C). Every long-running task of a service watches it and drains.
///
/// # Panics
/// When the signal handlers cannot be installed (no Tokio runtime).
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down."),
            _ = term.recv() => tracing::info!("SIGTERM received; shutting down."),
        }
        cancel.cancel();
    });
    token
}
