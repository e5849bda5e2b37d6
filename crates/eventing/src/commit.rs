//! Work that must happen only if a consumer's transaction commits: counting a business outcome,
//! waking a worker. A handler runs inside a transaction the consumer commits after it returns
//! (together with other records, each in a savepoint), so the handler cannot know whether its
//! effect will stick; [`after_commit`] lets it say what to do once it does.

use std::cell::RefCell;

type Effect = Box<dyn FnOnce() + Send>;

tokio::task_local! {
    static PENDING: RefCell<Vec<Effect>>;
}

/// Runs `f` after the transaction applying the current event commits, and never if it rolls
/// back (the handler failed, a later statement failed, the database went away).
///
/// Outside a [`Handler`](crate::Handler) there is no such transaction and `f` runs at once: code
/// that commits its own transaction (a gRPC call) calls it after its commit.
///
/// ```
/// # use prometheus_client::metrics::counter::Counter;
/// let confirmed = Counter::<u64>::default();
/// let counter = confirmed.clone();
/// shop_eventing::after_commit(move || {
///     counter.inc();
/// });
/// assert_eq!(confirmed.get(), 1, "outside a handler it runs at once");
/// ```
pub fn after_commit(f: impl FnOnce() + Send + 'static) {
    let mut f = Some(f);
    let deferred = PENDING.try_with(|pending| {
        if let Some(f) = f.take() {
            pending.borrow_mut().push(Box::new(f));
        }
    });
    if deferred.is_err()
        && let Some(f) = f.take()
    {
        f();
    }
}

/// Increments `counter` once the current transaction commits ([`after_commit`]): a business
/// outcome is counted once it is durable, and never for a transaction that rolled back.
pub fn count_on_commit(counter: &prometheus_client::metrics::counter::Counter) {
    let counter = counter.clone();
    after_commit(move || {
        counter.inc();
    });
}

/// Runs `work`, which commits a transaction of its own and returns `Ok` only once it has
/// committed (a gRPC call's use case), then what it deferred with [`after_commit`]; on `Err`
/// the deferred effects are dropped, as the transaction was.
///
/// # Errors
/// `work`'s error.
pub async fn committing<T, E>(work: impl Future<Output = Result<T, E>>) -> Result<T, E> {
    let (result, deferred) = Deferred::collect(work).await;
    if result.is_ok() {
        deferred.run();
    }
    result
}

/// Effects deferred by one record's handler.
#[derive(Default)]
pub(crate) struct Deferred(Vec<Effect>);

impl Deferred {
    /// Runs `future` (a handler call) collecting what it defers with [`after_commit`].
    pub(crate) async fn collect<T>(future: impl Future<Output = T>) -> (T, Self) {
        PENDING
            .scope(RefCell::new(Vec::new()), async {
                let output = future.await;
                let deferred = PENDING.with(|pending| pending.take());
                (output, Self(deferred))
            })
            .await
    }

    /// The transaction committed: run them, in order.
    pub(crate) fn run(self) {
        for effect in self.0 {
            effect();
        }
    }
}
