//! Portico as JupyterHub's proxy: a drop-in for configurable-http-proxy
//! (CHP).
//!
//! `portico-gateway chp [CHP's flags]`, or the binary invoked as
//! `configurable-http-proxy` (a symlink, or the wrapper script next to this
//! crate), serves CHP's command line ([`cli`]), its REST API ([`api`]) and
//! its routing: the longest whole-segment prefix wins, the full path is
//! forwarded, websockets pass, `--default-target` is the `/` route and
//! `--error-target` serves the 404/5xx pages. It is an adapter onto the
//! same core as the folder and cluster modes: every API change is a
//! [`TableDelta`](portico_routing::parts::TableDelta) of its own pieces,
//! patched onto the serving matcher ([`store`]), never a second router.
//!
//! Routes live in memory, as in CHP; `--routes-file` keeps them on disk so
//! a restart serves them again ([`persist`]). Each route's `last_activity`
//! follows CHP's rule ([`activity`]). What a route is, the API's requests
//! and answers and the pieces that serve a route come from `portico-chp`,
//! which the controller's cluster mode shares.

mod activity;
mod api;
pub mod cli;
mod hooks;
mod persist;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::services::listening::Service;
use portico_chp::Layout;

use self::activity::Activity;
pub use self::cli::{ChpArgs, ChpSettings};
use self::hooks::ErrorPages;
pub use self::hooks::{ProxyHooks, listener_error_page};
use self::store::RouteStore;
use crate::apply::ConfigSink;

/// The name JupyterHub runs by default (`c.ConfigurableHTTPProxy.command`).
pub const CHP_COMMAND: &str = "configurable-http-proxy";
/// `portico-gateway chp ...`.
pub const CHP_SUBCOMMAND: &str = "chp";

/// Everything CHP mode adds to the gateway.
pub struct ChpMode {
    pub settings: ChpSettings,
    layout: Layout,
    pub hooks: Arc<ProxyHooks>,
}

impl ChpMode {
    pub fn new(settings: ChpSettings) -> anyhow::Result<Self> {
        let error_pages = match (&settings.error_target, &settings.error_path) {
            (Some(url), _) => {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .context("creating the HTTP client of --error-target")?;
                ErrorPages::Target { url: url.clone(), client }
            }
            (None, Some(dir)) => ErrorPages::Folder(dir.clone()),
            (None, None) => ErrorPages::Plain,
        };
        let hooks = Arc::new(ProxyHooks {
            activity: Arc::new(Activity::default()),
            x_forward: settings.x_forward,
            error_pages,
        });
        Ok(Self { layout: Layout::new(&settings.layout()), settings, hooks })
    }

    /// The traffic ports and where they listen.
    pub fn binds(&self) -> Vec<(u16, SocketAddr)> {
        self.layout
            .ports()
            .into_iter()
            .map(|(port, _)| {
                let ip = self.settings.listen.ip();
                (port, SocketAddr::new(ip, port))
            })
            .collect()
    }

    /// The ports to bind and what each speaks.
    pub fn ports(&self) -> crate::state::Ports {
        self.layout.ports().into_iter().collect()
    }

    /// Serves the first routes through `sink` and returns the API listener.
    pub fn start(self, sink: Arc<ConfigSink>) -> anyhow::Result<Service<HttpServer<api::ChpApi>>> {
        if let Some(file) = &self.settings.pid_file {
            std::fs::write(file, std::process::id().to_string())
                .with_context(|| format!("--pid-file {}: cannot write it", file.display()))?;
        }
        let token = std::env::var("CONFIGPROXY_AUTH_TOKEN").ok().filter(|token| !token.is_empty());
        if token.is_none() {
            tracing::warn!("REST API is not authenticated (no CONFIGPROXY_AUTH_TOKEN)");
        }
        let store = Arc::new(RouteStore::new(
            self.layout,
            self.settings.host_routing,
            sink,
            Arc::clone(&self.hooks.activity),
            self.settings.routes_file.clone(),
        ));
        store.start(self.settings.default_target.as_ref())?;
        let api = api::ChpApi { routes: store, token };
        let mut service = Service::new("chp api".to_string(), HttpServer::new_app(api));
        service.threads = Some(1);
        service.add_tcp(&self.settings.api.to_string());
        tracing::info!(
            proxy = %self.settings.listen,
            api = %self.settings.api,
            default_target = ?self.settings.default_target.as_ref().map(ToString::to_string),
            "configurable-http-proxy API at http://{}/api/routes",
            self.settings.api
        );
        Ok(service)
    }
}

/// The command line, if this process runs as configurable-http-proxy:
/// invoked under that name, or as `portico-gateway chp ...`.
pub fn chp_command_line() -> Option<Vec<std::ffi::OsString>> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .and_then(|arg0| std::path::Path::new(arg0).file_name().map(|name| name.to_string_lossy().into_owned()));
    if invoked_as.as_deref() == Some(CHP_COMMAND) {
        return Some(args);
    }
    if args.get(1).is_some_and(|arg| arg == CHP_SUBCOMMAND) {
        args.remove(1);
        args[0] = CHP_COMMAND.into();
        return Some(args);
    }
    None
}
