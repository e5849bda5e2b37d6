//! The gRPC server every service runs: its own services plus `grpc.health.v1` and server
//! reflection (v1 for current clients, v1alpha for older ones such as grpcurl 1.8.6), all
//! described by one descriptor set that includes the health and `google.rpc` error types, so
//! `grpcurl list/describe` and error-detail decoding work against every service.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
pub use tonic_health::server::{HealthReporter, health_reporter};

/// Reflection services (v1 and v1alpha) describing the shop contracts, health and error details.
/// They list only what this port serves: `services` (the service's own API), health and
/// reflection itself. The other shop services' descriptors are registered too (the shared
/// messages live in the same files) but not listed, so `grpcurl list` on the order port does not
/// claim it serves InventoryService.
///
/// # Panics
/// Never with the compiled-in descriptor sets.
pub fn add_reflection(routes: Routes, services: &[&str]) -> Routes {
    let listed = services.iter().copied().chain([
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]);
    let configure = || {
        listed.clone().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(shop_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
                // Either version describes both, so a client of one can `describe` the other.
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(
                    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                ),
            tonic_reflection::server::Builder::with_service_name,
        )
    };
    let v1 = configure()
        .include_reflection_service(false)
        .build_v1()
        .expect("valid descriptor sets");
    let v1alpha = configure()
        .include_reflection_service(false)
        .build_v1alpha()
        .expect("valid descriptor sets");
    routes.add_service(v1).add_service(v1alpha)
}

/// Binds `addr` (port 0 picks a free port; tests read it back with `local_addr`).
///
/// # Errors
/// When the address is taken or invalid.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// What the `grpc.health.v1` service of [`serve`] reports.
#[derive(Debug)]
pub struct Health<'a> {
    /// The health service's state (from [`health_reporter`]).
    pub reporter: HealthReporter,
    /// The services whose status follows `ready`: those the readiness probe checks.
    pub service_names: &'a [&'static str],
    /// SERVING while true, NOT_SERVING while false (e.g. while the outbox relay is stalled).
    pub ready: tokio::sync::watch::Receiver<bool>,
}

/// Serves `routes` on `listener` until `shutdown` is cancelled. Every call but health and
/// reflection must carry a bearer token that `auth` accepts (see [`crate::auth`]): there is no
/// server without it. Every call gets a server span
/// (continuing the caller's trace) and is counted and timed in `metrics`. The named services
/// of `health` are reported SERVING while its `ready` is true and NOT_SERVING while it is false
/// (the overall `""` status, which liveness probes check, follows only the process's life). On
/// shutdown, every service is first reported NOT_SERVING (load balancers and Kubernetes stop
/// sending new calls), then in-flight calls finish and the server stops.
///
/// # Errors
/// Transport errors of the server.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    health: Health<'_>,
    shutdown: CancellationToken,
    request_timeout: Duration,
    metrics: shop_telemetry::grpc::GrpcMetrics,
    auth: &crate::auth::Authenticator,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let Health {
        reporter,
        service_names,
        mut ready,
    } = health;
    let names = service_names.to_vec();
    let names_for_reflection = names.clone();
    let lifecycle = async move {
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        // The only writer of the statuses until shutdown, so a change of readiness can never
        // land after the shutdown's NOT_SERVING.
        loop {
            let status = if *ready.borrow_and_update() {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            for name in &names {
                reporter.set_service_status(*name, status).await;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = ready.changed() => {
                    if changed.is_err() {
                        shutdown.cancelled().await;
                        break;
                    }
                }
            }
        }
        for name in &names {
            reporter
                .set_service_status(*name, tonic_health::ServingStatus::NotServing)
                .await;
        }
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    };
    tonic::transport::Server::builder()
        .timeout(request_timeout)
        // Outside the authentication, so refused calls are traced and counted (UNAUTHENTICATED).
        .layer(shop_telemetry::grpc::GrpcServerLayer::new(metrics))
        .layer(auth.layer())
        .add_routes(add_reflection(routes, &names_for_reflection))
        .serve_with_incoming_shutdown(incoming, lifecycle)
        .await
}
