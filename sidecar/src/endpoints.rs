//! The small HTTP listeners (health, metrics, admin): one GET per
//! connection, answered and closed. No HTTP library: three fixed paths.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A response: status, content type, body.
pub type Reply = (u16, &'static str, String);

/// Serves `handler(path)` on `address` forever.
pub async fn serve<F, Fut>(address: SocketAddr, handler: F) -> std::io::Result<()>
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send,
{
    let listener = TcpListener::bind(address).await?;
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { continue };
            let handler = handler.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 2048];
                let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buffer)).await;
                let Ok(Ok(length)) = read else { return };
                let head = String::from_utf8_lossy(&buffer[..length]);
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, content_type, body) = handler(path).await;
                let reason = match status {
                    200 => "OK",
                    404 => "Not Found",
                    _ => "Service Unavailable",
                };
                let response = format!(
                    "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Ok(())
}
