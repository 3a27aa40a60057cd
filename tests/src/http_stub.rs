//! A small HTTP/1.1 server whose answers a test decides, and which records
//! every request it was sent: what reached an upstream (headers the gateway
//! removed or added), and the services the gateway itself calls (a JWKS
//! endpoint, an external authorization service).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request as the stub received it.
#[derive(Clone, Debug, Default)]
pub struct StubRequest {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Lower-case names, in arrival order (repeats kept).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl StubRequest {
    /// Every value of `name`.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }

    /// The first value of `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).into_iter().next()
    }
}

/// The stub's answer.
#[derive(Clone, Debug)]
pub struct StubResponse {
    pub status: u16,
    pub headers: BTreeMap<String, Vec<String>>,
    pub body: Vec<u8>,
}

impl StubResponse {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self { status, headers: BTreeMap::new(), body: body.into() }
    }

    /// Adds a header (several values of one name are sent as separate lines).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.entry(name.to_string()).or_default().push(value.to_string());
        self
    }
}

type Handler = dyn Fn(&StubRequest) -> StubResponse + Send + Sync;

/// A running stub; its thread lives as long as the test process.
pub struct HttpStub {
    address: SocketAddr,
    requests: Arc<Mutex<Vec<StubRequest>>>,
}

impl HttpStub {
    /// Serves on a free loopback port, answering each request with `handler`.
    pub fn start(handler: impl Fn(&StubRequest) -> StubResponse + Send + Sync + 'static) -> HttpStub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the HTTP stub");
        let address = listener.local_addr().expect("the stub's address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let recorded = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let handler = Arc::clone(&handler);
                let recorded = Arc::clone(&recorded);
                std::thread::spawn(move || serve(stream, &*handler, &recorded));
            }
        });
        HttpStub { address, requests }
    }

    /// Answers every request 200 with the request's method, target and
    /// headers as the body, one `name: value` per line.
    pub fn echo() -> HttpStub {
        HttpStub::start(|request| {
            let mut body = format!("{} {}\n", request.method, request.target);
            for (name, value) in &request.headers {
                body.push_str(&format!("{name}: {value}\n"));
            }
            StubResponse::new(200, body).with_header("content-type", "text/plain")
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<StubRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn serve(stream: TcpStream, handler: &Handler, recorded: &Mutex<Vec<StubRequest>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        if let Ok(mut all) = recorded.lock() {
            all.push(request.clone());
        }
        let response = handler(&request);
        let mut head = format!("HTTP/1.1 {} Stub\r\ncontent-length: {}\r\n", response.status, response.body.len());
        for (name, values) in &response.headers {
            for value in values {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        head.push_str("\r\n");
        if writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(&response.body)).is_err() {
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<StubRequest> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|n| *n > 0)?;
    let mut parts = line.trim_end().splitn(3, ' ');
    let mut request =
        StubRequest { method: parts.next()?.to_string(), target: parts.next()?.to_string(), ..StubRequest::default() };
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok().filter(|n| *n > 0)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        request.headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length = request.header("content-length").and_then(|l| l.parse::<usize>().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    request.body = body;
    Some(request)
}
