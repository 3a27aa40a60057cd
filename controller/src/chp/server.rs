//! The API listener (`--chp-api`): configurable-http-proxy's REST API,
//! answered as `portico_chp::api` says, with routes as ChpRoute objects.
//!
//! Writes go to the API server (any replica can write; the objects are the
//! only state), and a write is answered once this replica's route index has
//! published it to its gateway streams, so JupyterHub's next request, the
//! user's redirect to their new server, finds the route. Reads come from
//! the index's cache of the objects, which that wait keeps consistent with
//! this replica's own writes; until the index has filled its caches at
//! start-up, requests wait for it (an empty list would make JupyterHub
//! re-add every route).
//!
//! `last_activity`: the latest of what any gateway replica reported for the
//! route's target (the lifecycle's activity rules: page loads, changes,
//! kernel and terminal messages, busy kernels) and when the route was added.
//! CHP counts every proxied byte instead; the rule here is the one Kubeflow
//! culling uses, so an open but idle JupyterLab tab does not keep a server
//! alive for jupyterhub-idle-culler either.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use portico_api::chp::ChpRoute;
use portico_chp::api::{self, ApiRequest, MAX_BODY_BYTES, Refusal};
use portico_chp::route::shown;
use portico_chp::timestamp::now_ms;
use portico_chp::{CheckedRoute, RouteError, RoutePath};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::ChpSettings;
use super::objects::{from_object, object_name, to_object};
use super::propagation::{Awaited, Propagation, version_number};
use crate::lifecycle::activity::ActivityBook;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// Longest a write waits for its publication before it is answered anyway
/// (the object is written; the gateways get it when the index catches up).
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a request waits for the route index's first build at start-up
/// (JupyterHub's first call checks the routes: an empty answer from a cache
/// still filling would make it re-add every route).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// The field manager of the API's server-side applies.
const FIELD_MANAGER: &str = "portico-chp-api";

/// Why a request failed after it was accepted.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("route {0:?} would overwrite route {1:?} (their object names collide)")]
    Collision(String, String),
    #[error("the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// What the listener answers from.
pub struct ChpApi {
    pub settings: ChpSettings,
    pub objects: Api<ChpRoute>,
    /// The route index's cache of the objects.
    pub cache: Store<ChpRoute>,
    pub activity: Arc<ActivityBook>,
    pub propagation: Arc<Propagation>,
    pub metrics: Metrics,
    /// The route index's snapshots: version 0 until its caches are filled.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// When this replica started: the default target's route was "added".
    pub started_unix_ms: i64,
}

/// Serves `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, api: Arc<ChpApi>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting a proxy API connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let api = api.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(api.respond(request).await.map(|body| Full::new(Bytes::from(body)))) }
            });
            if let Err(error) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(%error, "proxy API connection ended with an error");
            }
        });
    }
}

impl ChpApi {
    async fn respond(&self, request: Request<Incoming>) -> Response<Vec<u8>> {
        let started = Instant::now();
        let method = request.method().clone();
        let uri = request.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
        let authorization = request.headers().get(header::AUTHORIZATION).cloned();
        let mut snapshots = self.snapshots.clone();
        if tokio::time::timeout(STARTUP_TIMEOUT, snapshots.wait_for(|s| s.version > 0)).await.is_err() {
            return api::text(StatusCode::SERVICE_UNAVAILABLE, "the route index is still starting");
        }
        let response = match ApiRequest::parse(&method, &uri, authorization.as_ref(), self.settings.token.as_deref()) {
            Err(refused) => refused.response(),
            Ok(ApiRequest::List { inactive_since_ms }) => {
                api::json(StatusCode::OK, &Value::Object(self.list(inactive_since_ms)))
            }
            Ok(ApiRequest::Get { path }) => self.get(path),
            Ok(ApiRequest::Add { path }) => match read_body(request).await.and_then(|body| api::parse_body(&body)) {
                Ok(body) => self.answer(self.add(path, body).await.map(|()| StatusCode::CREATED)),
                Err(refused) => refused.response(),
            },
            Ok(ApiRequest::Delete { path }) => self.answer(self.delete(path).await),
        };
        let status = response.status().as_u16();
        self.metrics.chp_requests.with_label_values(&[method.as_str(), &status.to_string()]).inc();
        let path = uri.split('?').next().unwrap_or_default();
        let elapsed_us = started.elapsed().as_micros() as u64;
        tracing::info!(target: "access", api = true, %method, path, status, elapsed_us);
        response
    }

    /// Every route idle since before `inactive_since` (all without it).
    fn list(&self, inactive_since: Option<i64>) -> Map<String, Value> {
        let keep = |last: i64| inactive_since.is_none_or(|since| last < since);
        let mut routes: Map<String, Value> = self
            .cache
            .state()
            .iter()
            .filter_map(|object| {
                let route = from_object(object, self.settings.host_routing).ok()?;
                let last = self.last_activity(object, &route);
                keep(last).then(|| (route.path.key.clone(), Value::Object(shown(&route.data, &route.path, Some(last)))))
            })
            .collect();
        if let Some((key, route, last)) = self.default_route()
            && !routes.contains_key(&key)
            && keep(last)
        {
            routes.insert(key, Value::Object(route));
        }
        routes
    }

    /// `--chp-default-target` as CHP lists it (a route `/` it added at
    /// start-up), while no ChpRoute claims `/`: key, route, last activity.
    fn default_route(&self) -> Option<(String, Map<String, Value>, i64)> {
        let target = self.settings.default_target.as_ref()?;
        let path = RoutePath::parse("/", self.settings.host_routing).ok()?;
        if self.cached(&path.key).is_some() {
            return None;
        }
        let reported = self.activity.last_activity_ms(&target.activity_key()).unwrap_or(0);
        let last = reported.max(self.started_unix_ms);
        let data = Map::from_iter([("target".to_string(), Value::String(target.to_string()))]);
        Some((path.key.clone(), shown(&data, &path, Some(last)), last))
    }

    fn get(&self, raw_path: &str) -> Response<Vec<u8>> {
        let path = match RoutePath::parse(raw_path, self.settings.host_routing) {
            Ok(path) => path,
            Err(error) => return api::text(StatusCode::BAD_REQUEST, &RouteError::from(error).to_string()),
        };
        let found = self
            .cached(&path.key)
            .and_then(|object| {
                let route = from_object(&object, self.settings.host_routing).ok()?;
                let last = self.last_activity(&object, &route);
                Some(shown(&route.data, &route.path, Some(last)))
            })
            .or_else(|| self.default_route().filter(|(key, ..)| *key == path.key).map(|(_, route, _)| route));
        match found {
            Some(route) => api::json(StatusCode::OK, &Value::Object(route)),
            None => api::empty(StatusCode::NOT_FOUND),
        }
    }

    /// Writes the route's object and waits for its publication.
    async fn add(&self, raw_path: &str, body: Value) -> Result<(), ApiError> {
        let route = CheckedRoute::parse(raw_path, body, self.settings.host_routing)?;
        let name = object_name(&route.path.key);
        if let Some(existing) = self.cache.get(&self.reference(&name))
            && let Ok(other) = from_object(&existing, self.settings.host_routing)
            && other.path.key != route.path.key
        {
            return Err(ApiError::Collision(route.path.key, other.path.key));
        }
        let started = Instant::now();
        let object = to_object(&route, &self.settings.namespace, now_ms());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let written = self.objects.patch(&name, &params, &Patch::Apply(&object)).await?;
        let version = version_number(written.resource_version().as_deref());
        tracing::debug!(object = %name, version, elapsed_us = started.elapsed().as_micros() as u64, "ChpRoute written");
        self.await_publication(&name, Awaited::Version(version), started).await;
        tracing::info!(route = %route.path.key, target = %route.target, object = %name, "route added");
        Ok(())
    }

    /// Deletes the route's object; 404 if there was none.
    async fn delete(&self, raw_path: &str) -> Result<StatusCode, ApiError> {
        let path = RoutePath::parse(raw_path, self.settings.host_routing).map_err(RouteError::from)?;
        let name = object_name(&path.key);
        let started = Instant::now();
        match self.objects.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(StatusCode::NOT_FOUND),
            Err(error) => return Err(error.into()),
        }
        self.await_publication(&name, Awaited::Gone, started).await;
        tracing::info!(route = %path.key, object = %name, "route removed");
        Ok(StatusCode::NO_CONTENT)
    }

    async fn await_publication(&self, name: &str, awaited: Awaited, started: Instant) {
        if self.propagation.wait(name, awaited, PROPAGATION_TIMEOUT).await {
            self.metrics.chp_propagation.observe(started.elapsed().as_secs_f64());
        } else {
            tracing::warn!(object = name, timeout = ?PROPAGATION_TIMEOUT, "the route index has not published the change yet; answering anyway");
        }
    }

    /// The object of route `key` in the cache, if it is that key's.
    fn cached(&self, key: &str) -> Option<Arc<ChpRoute>> {
        self.cache
            .get(&self.reference(&object_name(key)))
            .filter(|object| from_object(object, self.settings.host_routing).is_ok_and(|route| route.path.key == key))
    }

    fn reference(&self, name: &str) -> ObjectRef<ChpRoute> {
        ObjectRef::new(name).within(&self.settings.namespace)
    }

    /// The gateways' report for the target, or when the route was added.
    fn last_activity(&self, object: &ChpRoute, route: &CheckedRoute) -> i64 {
        let reported = self.activity.last_activity_ms(&route.target.activity_key()).unwrap_or(0);
        reported.max(object.spec.added_unix_ms)
    }

    fn answer(&self, result: Result<StatusCode, ApiError>) -> Response<Vec<u8>> {
        match result {
            Ok(status) => api::empty(status),
            Err(ApiError::Route(error)) => {
                tracing::warn!(%error, "route refused");
                api::text(StatusCode::BAD_REQUEST, &error.to_string())
            }
            Err(error) => {
                tracing::error!(%error, "proxy API request failed");
                api::text(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string())
            }
        }
    }
}

/// The request body, at most [`MAX_BODY_BYTES`], or why it is refused.
async fn read_body(request: Request<Incoming>) -> Result<Bytes, Refusal> {
    let limited = Limited::new(request.into_body(), MAX_BODY_BYTES);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(api::too_large()),
        Err(error) => Err(api::unreadable(&error)),
    }
}
