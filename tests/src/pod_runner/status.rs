//! A pod's readiness: asked of its servers, reported in its status as a
//! kubelet reports it (the status subresource, conditions merged by type).

use std::net::{Ipv4Addr, SocketAddr};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

/// Whether every container's server answers. A container with an HTTP
/// readiness probe is asked as the kubelet asks, from the node to the pod's
/// IP (a status below 400). One without is asked from inside the pod, on
/// 127.0.0.1 (any HTTP answer): a meshed pod's sidecar captures what comes
/// from outside, as Istio's does, and a kubelet would have marked such a
/// container ready on start. A container with no port counts as ready while
/// it runs.
pub async fn all_answer(ip: Ipv4Addr, netns: &str, checks: &[(String, Option<u16>, Option<String>)]) -> bool {
    for (_, port, path) in checks {
        let Some(port) = *port else { continue };
        let answered = match path {
            Some(path) => {
                let addr = SocketAddr::from((ip, port));
                let path = path.clone();
                let status = tokio::task::spawn_blocking(move || {
                    crate::raw_http::get(addr, &addr.to_string(), &path).map(|response| response.status).unwrap_or(0)
                })
                .await
                .unwrap_or(0);
                (1..400).contains(&status)
            }
            None => inside_answers(netns, port).await,
        };
        if !answered {
            return false;
        }
    }
    true
}

/// Any HTTP answer on 127.0.0.1:`port` inside network namespace `netns`.
async fn inside_answers(netns: &str, port: u16) -> bool {
    let output = tokio::process::Command::new("ip")
        .args(["netns", "exec", netns, "curl", "-s", "-o", "/dev/null", "-m", "2", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .await;
    output.is_ok_and(|output| output.stdout.first().is_some_and(|digit| (b'1'..=b'5').contains(digit)))
}

/// Reports the pod Running and Ready (or Running and NotReady).
pub async fn set_ready(pods: &Api<Pod>, pod: &Pod, ready: bool) -> Result<(), kube::Error> {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = if ready { "True" } else { "False" };
    let reason = if ready { Value::Null } else { json!("ContainersNotReady") };
    let containers: Vec<Value> = pod
        .spec
        .iter()
        .flat_map(|spec| spec.containers.iter())
        .map(|container| {
            json!({
                "name": container.name,
                "image": container.image,
                "imageID": "",
                "ready": ready,
                "started": true,
                "restartCount": 0,
                "state": {"waiting": null, "running": {"startedAt": now}},
            })
        })
        .collect();
    let patch = json!({"status": {
        "phase": "Running",
        "conditions": [
            {"type": "Initialized", "status": "True", "lastTransitionTime": now, "reason": null},
            {"type": "ContainersReady", "status": status, "lastTransitionTime": now, "reason": reason},
            {"type": "Ready", "status": status, "lastTransitionTime": now, "reason": reason},
        ],
        "containerStatuses": containers,
    }});
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    pods.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch)).await.map(|_| ())
}
