//! A fast fake Jupyter notebook server, the upstream of Portico's benchmarks.
//!
//! It answers any path (notably `/notebook/<ns>/<name>/...`) with a small JSON
//! body, and enough of Jupyter Server's REST API and kernel websocket
//! protocol for a notebook session: `GET .../api/status`, `POST
//! .../api/kernels`, `GET .../api/contents`, and `execute_request` on
//! `.../api/kernels/<id>/channels` (integer sums such as `1+1` evaluate).
//!
//! It is built to never be the bottleneck of a gateway benchmark: hyper's
//! HTTP/1.1 keep-alive server with preallocated bodies (optionally h2c), and
//! websockets that cost almost nothing while idle.
//!
//! ```no_run
//! # async fn example() -> Result<(), portico_fake_notebook::Error> {
//! let listener = portico_fake_notebook::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await?;
//! portico_fake_notebook::serve(listener, portico_fake_notebook::Config::default()).await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod ids;
mod kernel;
mod routes;
mod server;
mod websocket;

pub use kernel::evaluate;
pub use server::{Config, Error, bind, serve};
