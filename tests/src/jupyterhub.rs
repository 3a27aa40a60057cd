//! A real JupyterHub (from the venv `scripts/install-deps` builds) whose
//! proxy is Portico: started by the hub through its `ConfigurableHTTPProxy`
//! (`command = [portico-gateway, chp]`), or already running
//! (`should_start = False`).
//!
//! DummyAuthenticator (any user, any password) and SimpleLocalProcessSpawner
//! (single-user servers as local processes of the current user, no system
//! accounts): everything a JupyterHub deployment does through its proxy,
//! with nothing of the machine's own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::chp_proxy::TOKEN;
use crate::jupyter::venv_python;
use crate::process::{ChildProcess, Stop, clear_settings_env};
use crate::raw_http::{self, RawResponse};
use crate::wait::poll;
use crate::{binary, free_port};

/// Bound on the hub (and the proxy it starts) answering through the proxy.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Time the hub gets on SIGTERM to stop its proxy and single-user servers.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The hub service token tests use for the hub's REST API.
pub const HUB_TOKEN: &str = "portico-hub-test-service-token";

/// Where the hub's proxy comes from.
pub enum HubProxy {
    /// The hub runs `portico-gateway chp` itself, on these ports.
    Started { port: u16, api_port: u16 },
    /// Portico runs already: `should_start = False`.
    External { public: SocketAddr, api: SocketAddr },
}

/// A running JupyterHub, stopped (with its servers and proxy) on drop.
pub struct JupyterHub {
    process: ChildProcess,
    /// The proxy's public address: where users (and tests) go.
    pub public: SocketAddr,
    /// The proxy's REST API.
    pub proxy_api: SocketAddr,
    proxy_pid_file: PathBuf,
    _dir: TempDir,
}

impl JupyterHub {
    /// Writes a `jupyterhub_config.py` for `proxy`, starts the hub and waits
    /// until `/hub/api` answers through the proxy.
    pub fn start(proxy: HubProxy) -> JupyterHub {
        JupyterHub::start_with(proxy, "")
    }

    /// [`JupyterHub::start`] with `extra` lines appended to the config
    /// (`venv` in them is the venv's `bin` folder: `{venv}/python`).
    pub fn start_with(proxy: HubProxy, extra: &str) -> JupyterHub {
        let dir = tempfile::Builder::new().prefix("portico-jupyterhub-").tempdir().expect("creating a hub dir");
        let hub_port = free_port();
        let (public, proxy_api, proxy_config) = match proxy {
            HubProxy::Started { port, api_port } => {
                let command = [binary("portico-gateway").display().to_string(), "chp".to_string()];
                let config = format!("c.ConfigurableHTTPProxy.command = {}\n", python_list(&command));
                (local(port), local(api_port), config)
            }
            HubProxy::External { public, api } => {
                (public, api, "c.ConfigurableHTTPProxy.should_start = False\n".into())
            }
        };
        let venv_bin = venv_python().parent().map(|bin| bin.to_path_buf()).unwrap_or_default();
        let proxy_pid_file = dir.path().join("proxy.pid");
        let config = format!(
            r#"c = get_config()  # noqa
c.JupyterHub.bind_url = "http://{public}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///{dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{dir}/cookie_secret"
c.JupyterHub.pid_file = "{dir}/jupyterhub.pid"
c.JupyterHub.authenticator_class = "jupyterhub.auth.DummyAuthenticator"
c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
c.SimpleLocalProcessSpawner.home_dir_template = "{dir}/home/{{username}}"
# JupyterHub starts servers in sessions of their own, out of reach of the
# test's group kill: each dies with the hub instead (setpriv, util-linux).
c.Spawner.cmd = ["/usr/bin/setpriv", "--pdeathsig", "KILL", "{venv_bin}/jupyterhub-singleuser"]
# Tests run as root; Jupyter refuses root without this.
c.Spawner.args = ["--allow-root", "--LabApp.news_url=None", "--LabApp.extension_manager=readonly"]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.ConfigurableHTTPProxy.api_url = "http://{proxy_api}"
c.ConfigurableHTTPProxy.auth_token = "{TOKEN}"
c.ConfigurableHTTPProxy.pid_file = "{pid_file}"
{proxy_config}
c.JupyterHub.services = [{{"name": "portico-test", "api_token": "{HUB_TOKEN}"}}]
c.JupyterHub.load_roles = [{{
    "name": "portico-test",
    "scopes": ["admin:users", "admin:servers", "read:users:activity", "list:users", "access:servers"],
    "services": ["portico-test"],
}}]
{extra}
"#,
            extra = extra.replace("{venv}", &venv_bin.display().to_string()),
            dir = dir.path().display(),
            pid_file = proxy_pid_file.display(),
            venv_bin = venv_bin.display(),
        );
        let config_path = dir.path().join("jupyterhub_config.py");
        std::fs::write(&config_path, config).expect("writing jupyterhub_config.py");
        std::fs::create_dir_all(dir.path().join("home")).expect("creating the users' home folder");
        let mut command = Command::new(venv_python());
        command
            .args(["-m", "jupyterhub", "-f"])
            .arg(&config_path)
            .current_dir(dir.path())
            // The single-user servers find the hub's venv first.
            .env("PATH", format!("{}:{}", venv_bin.display(), std::env::var("PATH").unwrap_or_default()))
            .env("JUPYTER_CONFIG_DIR", dir.path().join("jupyter-config"))
            .env("JUPYTER_DATA_DIR", dir.path().join("jupyter-data"))
            .env("JUPYTER_RUNTIME_DIR", dir.path().join("jupyter-runtime"))
            .env("RUST_BACKTRACE", "1")
            .env_remove("CONFIGPROXY_AUTH_TOKEN")
            .env_remove("JUPYTER_PATH")
            .env_remove("PYTHONPATH");
        clear_settings_env(&mut command);
        let process =
            ChildProcess::spawn("jupyterhub", command, &dir.path().join("jupyterhub.log"), Stop::Terminate(STOP_GRACE));
        let mut hub = JupyterHub { process, public, proxy_api, proxy_pid_file, _dir: dir };
        hub.wait_ready();
        hub
    }

    fn wait_ready(&mut self) {
        let ready = poll(START_TIMEOUT, || {
            if let Some(status) = self.process.exited() {
                panic!("jupyterhub exited during start-up ({status}); log:\n{}", self.log_tail());
            }
            let response = raw_http::get(self.public, &self.public.to_string(), "/hub/api").ok()?;
            (response.status == 200).then_some(())
        });
        if ready.is_none() {
            panic!("jupyterhub did not answer through the proxy within {START_TIMEOUT:?}; log:\n{}", self.log_tail());
        }
    }

    /// Logs `user` in through the login form (`_xsrf` included) and
    /// returns the hub's cookies.
    pub fn log_in(&self, user: &str) -> Vec<(String, String)> {
        let page = self.request("GET", "/hub/login", &[], None);
        assert_eq!(page.status, 200, "GET /hub/login: {}\n{}", page.head, self.log_tail());
        let mut cookies = set_cookies(&page);
        let html = page.text();
        let xsrf = html
            .split("name=\"_xsrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no _xsrf field on the login page:\n{html}"))
            .to_string();
        let form = format!("username={user}&password=any&_xsrf={}", form_encode(&xsrf));
        let response = self.request("POST", "/hub/login?next=", &cookies, Some(&form));
        assert_eq!(
            response.status,
            302,
            "POST /hub/login: {}\n{}\n{}",
            response.head,
            response.text(),
            self.log_tail()
        );
        for (name, value) in set_cookies(&response) {
            cookies.retain(|(existing, _)| *existing != name);
            cookies.push((name, value));
        }
        assert!(cookies.iter().any(|(name, _)| name == "jupyterhub-hub-login"), "no login cookie: {cookies:?}");
        cookies
    }

    /// A request through the proxy with `cookies`.
    pub fn request(&self, method: &str, path: &str, cookies: &[(String, String)], form: Option<&str>) -> RawResponse {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.public);
        if !cookies.is_empty() {
            let header: Vec<String> = cookies.iter().map(|(name, value)| format!("{name}={value}")).collect();
            request.push_str(&format!("Cookie: {}\r\n", header.join("; ")));
        }
        if let Some(form) = form {
            request.push_str(&format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
                form.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(form.unwrap_or(""));
        raw_http::exchange(self.public, request.as_bytes())
            .unwrap_or_else(|error| panic!("{method} {path}: {error}; log:\n{}", self.log_tail()))
    }

    /// `method path` through the proxy with `Authorization: token <token>`
    /// (a single-user server's API, as the test service).
    pub fn request_with_token(&self, method: &str, path: &str, token: &str) -> RawResponse {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: token {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.public
        );
        raw_http::exchange(self.public, request.as_bytes())
            .unwrap_or_else(|error| panic!("{method} {path}: {error}; log:\n{}", self.log_tail()))
    }

    /// The hub's REST API through the proxy, as the test service.
    pub fn api(&self, method: &str, path: &str) -> RawResponse {
        self.try_api(method, path)
            .unwrap_or_else(|error| panic!("{method} /hub/api{path}: {error}; log:\n{}", self.log_tail()))
    }

    /// [`Self::api`], an I/O error returned (polls retry: a hub busy with
    /// a spawn on a loaded machine can take longer than a read timeout).
    pub fn try_api(&self, method: &str, path: &str) -> std::io::Result<RawResponse> {
        let request = format!(
            "{method} /hub/api{path} HTTP/1.1\r\nHost: {}\r\nAuthorization: token {HUB_TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.public
        );
        raw_http::exchange(self.public, request.as_bytes())
    }

    /// Creates `user` in the hub (what a first login does).
    pub fn create_user(&self, user: &str) {
        let response = self.api("POST", &format!("/users/{user}"));
        assert!([201, 409].contains(&response.status), "create {user}: {}\n{}", response.head, response.text());
    }

    /// Starts `user`'s server and waits until the hub says it is ready.
    pub fn spawn(&self, user: &str, timeout: Duration) {
        let response = self.api("POST", &format!("/users/{user}/server"));
        assert!(
            [201, 202].contains(&response.status),
            "spawn: {}\n{}\n{}",
            response.head,
            response.text(),
            self.log_tail()
        );
        let ready = poll(timeout, || {
            let user = self.try_api("GET", &format!("/users/{user}")).ok()?;
            let user: Value = serde_json::from_slice(&user.body).ok()?;
            (user["servers"][""]["ready"] == true).then_some(())
        });
        if ready.is_none() {
            panic!("{user}'s server was not ready within {timeout:?}; log:\n{}", self.log_tail());
        }
    }

    /// Stops `user`'s server and waits until the hub says it is gone.
    pub fn stop_server(&self, user: &str, timeout: Duration) {
        let response = self.api("DELETE", &format!("/users/{user}/server"));
        assert!([202, 204].contains(&response.status), "stop: {}\n{}", response.head, response.text());
        let stopped = poll(timeout, || {
            let user = self.try_api("GET", &format!("/users/{user}")).ok()?;
            let user: Value = serde_json::from_slice(&user.body).ok()?;
            user["servers"].get("").is_none().then_some(())
        });
        if stopped.is_none() {
            panic!("{user}'s server did not stop within {timeout:?}; log:\n{}", self.log_tail());
        }
    }

    /// The proxy's routing table (`GET /api/routes` on its API).
    pub fn proxy_routes(&self) -> Value {
        let request = format!(
            "GET /api/routes HTTP/1.1\r\nHost: {}\r\nAuthorization: token {TOKEN}\r\nConnection: close\r\n\r\n",
            self.proxy_api
        );
        let response = raw_http::exchange(self.proxy_api, request.as_bytes()).expect("GET /api/routes");
        assert_eq!(response.status, 200, "GET /api/routes: {}", response.head);
        serde_json::from_slice(&response.body).expect("routes as JSON")
    }

    /// The last lines of the hub's log (the proxy it started logs there too).
    pub fn log_tail(&self) -> String {
        self.process.log_tail(80)
    }
}

impl Drop for JupyterHub {
    fn drop(&mut self) {
        self.process.stop();
        // The hub starts its proxy in a session of its own: if the hub could
        // not stop it, the pid file says which process to end.
        if let Some(pid) = std::fs::read_to_string(&self.proxy_pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) has no memory-safety preconditions; ESRCH (gone) is fine.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn python_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| format!("{item:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// `name=value` of every Set-Cookie of `response`.
pub fn set_cookies(response: &RawResponse) -> Vec<(String, String)> {
    response
        .head
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            if !name.trim().eq_ignore_ascii_case("set-cookie") {
                return None;
            }
            let pair = value.trim().split(';').next()?;
            let (cookie, value) = pair.split_once('=')?;
            Some((cookie.trim().to_string(), value.trim().to_string()))
        })
        .collect()
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
