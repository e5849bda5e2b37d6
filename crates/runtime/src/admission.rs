//! The admission limit of a service's public API: at most so many calls in flight at once,
//! across all its connections; a call beyond that is refused at once with `RESOURCE_EXHAUSTED`
//! and a `RetryInfo` instead of queuing.
//!
//! Why refuse rather than queue: past its capacity a service that queues only makes every call
//! slower — each waits for a database connection behind the others until its deadline, the
//! client retries, and the work it can no longer finish keeps growing. A prompt refusal costs
//! microseconds, tells the client when to come back, and leaves the capacity to the calls
//! already admitted. The limit and the shedding are tower's own layers
//! ([`GlobalConcurrencyLimitLayer`], [`LoadShedLayer`]): this module only turns the shedding's
//! `Overloaded` error into the gRPC answer.
//!
//! Health checks, reflection and the admin API are served beside the limited API, never behind
//! it: an overloaded service must still answer its probes, or the platform would restart the
//! replicas that are busiest, and its operators must still reach it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::ServiceBuilder;
use tower::limit::{ConcurrencyLimit, GlobalConcurrencyLimitLayer};
use tower::load_shed::error::Overloaded;
use tower::load_shed::{LoadShed, LoadShedLayer};
use tower_service::Service;

/// How long a refused client is told to wait: long enough for the calls in flight to finish
/// (they take milliseconds), short enough that a client honouring it loses little.
pub const RETRY_AFTER: Duration = Duration::from_millis(100);

/// The permits of one API: shared by every connection, so the limit holds for the process.
#[derive(Clone, Debug)]
pub struct Admission {
    permits: Arc<Semaphore>,
}

impl Admission {
    /// At most `limit` calls in flight (at least one).
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit.max(1))),
        }
    }

    /// `server` behind the limit.
    pub fn admit<S>(&self, server: S) -> Admitted<S> {
        Admitted {
            inner: ServiceBuilder::new()
                .layer(LoadShedLayer::new())
                .layer(GlobalConcurrencyLimitLayer::with_semaphore(
                    self.permits.clone(),
                ))
                .service(server),
        }
    }
}

/// A gRPC server behind an [`Admission`] limit.
#[derive(Clone, Debug)]
pub struct Admitted<S> {
    inner: LoadShed<ConcurrencyLimit<S>>,
}

impl<S: NamedService> NamedService for Admitted<S> {
    const NAME: &'static str = S::NAME;
}

/// The answer to a call refused for want of capacity.
fn refusal() -> http::Response<Body> {
    crate::status::resource_exhausted(
        "the service is at its capacity; retry after the delay in RetryInfo",
        RETRY_AFTER,
    )
    .into_http()
}

impl<S> Service<http::Request<Body>> for Admitted<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The shedding layer is always ready: without a permit it sheds the call instead of
        // waiting. Its only other error would be the server's own, which is `Infallible`.
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let call = self.inner.call(request);
        Box::pin(async move {
            match call.await {
                Ok(response) => Ok(response),
                Err(error) if error.is::<Overloaded>() => Ok(refusal()),
                // Unreachable (the server cannot fail), but never a panic in the serving path.
                Err(error) => Ok(tonic::Status::internal(error.to_string()).into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;
    use tonic_types::StatusExt as _;

    /// A server whose calls finish when the test says so.
    #[derive(Clone)]
    struct Gate {
        release: Arc<tokio::sync::Mutex<Option<oneshot::Receiver<()>>>>,
    }

    impl NamedService for Gate {
        const NAME: &'static str = "test.Gate";
    }

    impl Service<http::Request<Body>> for Gate {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            let release = self.release.clone();
            Box::pin(async move {
                if let Some(gate) = release.lock().await.take() {
                    let _ = gate.await;
                }
                Ok(tonic::Status::ok("").into_http())
            })
        }
    }

    fn status_of(response: &http::Response<Body>) -> tonic::Status {
        tonic::Status::from_header_map(response.headers()).expect("a grpc-status")
    }

    async fn call(server: &mut Admitted<Gate>) -> http::Response<Body> {
        std::future::poll_fn(|cx| server.poll_ready(cx))
            .await
            .unwrap();
        server
            .call(http::Request::new(Body::empty()))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_call_beyond_the_limit_is_refused_at_once_with_a_retry_delay() {
        let (open, gate) = oneshot::channel();
        let admission = Admission::new(1);
        let server = Gate {
            release: Arc::new(tokio::sync::Mutex::new(Some(gate))),
        };
        // The first call holds the only permit until the gate opens.
        let mut first = admission.admit(server.clone());
        let held = tokio::spawn(async move { call(&mut first).await });
        while admission.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }

        let mut second = admission.admit(server.clone());
        let refused = tokio::time::timeout(Duration::from_secs(1), call(&mut second))
            .await
            .expect("refused at once, not queued");
        let status = status_of(&refused);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.get_details_retry_info().and_then(|r| r.retry_delay),
            Some(RETRY_AFTER)
        );
        // As the server does with each call's clone of the service: dropped after its call, so
        // that it queues for no permit.
        drop(second);

        open.send(()).unwrap();
        assert_eq!(status_of(&held.await.unwrap()).code(), tonic::Code::Ok);
        // The permit is back: the next call is admitted.
        let mut third = admission.admit(server);
        assert_eq!(status_of(&call(&mut third).await).code(), tonic::Code::Ok);
    }
}
