//! The Jupyter test harness on its own, without the gateway: a real Jupyter
//! Server under a Kubeflow-style base URL answers REST and runs code over
//! its kernel websocket. If this fails, the gateway tests cannot tell the
//! gateway's faults from the harness's.

use portico_e2e::{Jupyter, KernelSocket, channels_url, create_kernel, execute, http_client};

#[tokio::test]
async fn jupyter_serves_rest_and_kernel_websockets_under_a_base_url() {
    let jupyter = Jupyter::start("/notebook/team/nb/");
    let base = jupyter.url();
    assert_eq!(base, format!("http://127.0.0.1:{}/notebook/team/nb/", jupyter.port()));

    let status = http_client().get(format!("{base}api/status")).send().await.expect("GET api/status");
    assert_eq!(status.status().as_u16(), 200);
    // The base URL is honoured: the API is not served at the root.
    let root = http_client().get(format!("http://127.0.0.1:{}/api/status", jupyter.port())).send().await.unwrap();
    assert_eq!(root.status().as_u16(), 404);

    let kernel = create_kernel(&base).await;
    let ws_url = channels_url(&base, &kernel);
    assert_eq!(execute(&ws_url, "1+1").await, "2");

    // One socket, several executions; state lives in the kernel.
    let mut socket = KernelSocket::connect(&ws_url).await;
    assert_eq!(socket.execute("x = 40").await, "");
    assert_eq!(socket.execute("x + 2").await, "42");
    socket.close().await;
}
