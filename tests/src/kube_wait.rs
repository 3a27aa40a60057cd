//! Bounded waits on Kubernetes objects: poll with `get`, fail with the last
//! state seen.

use std::fmt::Debug;
use std::time::Duration;

use kube::Api;
use serde::de::DeserializeOwned;

use crate::wait::poll_async;

/// Polls `name` in `api` until `accept` returns `Some` for it (an object that
/// does not exist is `None` to `accept`), for at most `timeout`. Panics with
/// `what` and the last object seen otherwise; `context` is called for more
/// detail (a controller's log) only then.
pub async fn wait_object<K, T>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    accept: impl Fn(Option<&K>) -> Option<T>,
    context: impl FnOnce() -> String,
) -> T
where
    K: Clone + DeserializeOwned + Debug,
{
    let last = std::sync::Mutex::new(None::<K>);
    let found = poll_async(timeout, || async {
        let object = api.get_opt(name).await.ok().flatten();
        let accepted = accept(object.as_ref());
        *last.lock().unwrap_or_else(|p| p.into_inner()) = object;
        accepted
    })
    .await;
    match found {
        Some(value) => value,
        None => {
            let last = last.lock().unwrap_or_else(|p| p.into_inner()).take();
            panic!("{what}: not within {timeout:?}; last seen {name}: {last:#?}\n{}", context())
        }
    }
}

/// Polls the async `check` until it returns `Some`, for at most `timeout`;
/// panics with `what` and `context()` otherwise.
pub async fn wait_until<T, F>(
    what: &str,
    timeout: Duration,
    check: impl FnMut() -> F,
    context: impl FnOnce() -> String,
) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    match poll_async(timeout, check).await {
        Some(value) => value,
        None => panic!("{what}: not within {timeout:?}\n{}", context()),
    }
}
