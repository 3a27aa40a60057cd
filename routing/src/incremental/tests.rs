//! The incremental translation against the reference: after any sequence of
//! changes, the table and diagnostics equal a full translation of the final
//! objects, and the deltas handed out rebuild that same table.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::last_good::LastGood;
use crate::translate::translate;

/// One object of the test universe as YAML, by (kind, slot, variant).
fn object_yaml(kind: u8, slot: u8, variant: u8) -> (ObjectKind, String, String, String) {
    let ns = if slot % 3 == 2 { "other" } else { "team" };
    match kind % 7 {
        0 => {
            let servers = match variant % 4 {
                0 => r#"[{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]"#.to_string(),
                1 => r#"[{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"], tls: {httpsRedirect: true}},
                         {port: {number: 443, name: https, protocol: HTTPS}, hosts: ["*.example.com"], tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}}]"#.to_string(),
                2 => r#"[{port: {number: 80, name: http, protocol: HTTP}, hosts: ["team/*", "*.example.com"]},
                         {port: {number: 8080, name: http2, protocol: HTTP}, hosts: ["a.example.com"]}]"#.to_string(),
                _ => r#"[{port: {number: 80, name: http, protocol: TCP}, hosts: ["*"]}]"#.to_string(),
            };
            let yaml = format!(
                "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {{name: kubeflow-gateway, namespace: kubeflow}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers: {servers}\n"
            );
            (ObjectKind::Gateway, "kubeflow".into(), "kubeflow-gateway".into(), yaml)
        }
        1 | 2 => {
            let name = format!("vs{}", slot % 6);
            let hosts =
                ["[\"*\"]", "[\"a.example.com\"]", "[\"*.example.com\", \"b.example.com\"]"][usize::from(variant % 3)];
            let gateways =
                ["[kubeflow/kubeflow-gateway]", "[kubeflow/kubeflow-gateway]", "[mesh]", "[kubeflow/missing]"]
                    [usize::from(variant / 3 % 4)];
            let created =
                ["", "creationTimestamp: \"2026-01-01T00:00:00Z\", ", "creationTimestamp: \"2026-01-01T00:00:01Z\", "]
                    [usize::from(slot % 3)];
            let path = [
                "{prefix: /}",
                "{prefix: /a/}",
                "{prefix: /a/b/}",
                "{exact: /c}",
                "{regex: \"/r/.*\"}",
                "{regex: \"(\"}",
                "{prefix: /A/, ignoreUriCase: true}",
            ][usize::from(variant / 12 % 7)];
            let destination = match variant / 84 % 3 {
                0 => format!("{{host: svc{}.team.svc.cluster.local, port: {{number: 80}}}}", slot % 3),
                1 => format!("{{host: svc{}.team.svc.cluster.local}}", slot % 3),
                _ => "{host: svc0.team.svc.cluster.local, port: {number: 8080}}".to_string(),
            };
            let yaml = format!(
                "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}, {created}}}\nspec:\n  hosts: {hosts}\n  gateways: {gateways}\n  http:\n  - match: [{{uri: {path}}}, {{uri: {{prefix: /}}}}]\n    route: [{{destination: {destination}}}]\n  - match: [{{uri: {{prefix: /x/}}}}]\n    route: [{{destination: {{host: svc1.team.svc.cluster.local, port: {{number: 80}}}}}}]\n"
            );
            (ObjectKind::VirtualService, ns.into(), name, yaml)
        }
        3 => {
            let name = format!("nb{}", slot % 4);
            let created = ["", "creationTimestamp: \"2026-01-01T00:00:00Z\", "][usize::from(variant % 2)];
            let yaml = format!(
                "apiVersion: kubeflow.org/v1\nkind: Notebook\nmetadata: {{name: {name}, namespace: team, {created}}}\nspec: {{template: {{spec: {{containers: [{{name: {name}, image: x}}]}}}}}}\n"
            );
            (ObjectKind::Notebook, "team".into(), name, yaml)
        }
        4 => {
            let name = format!("svc{}", slot % 3);
            let ports = match variant % 3 {
                0 => "[{name: http, port: 80, targetPort: 8888}]",
                1 => "[{name: http, port: 80, targetPort: 8888}, {name: alt, port: 8080}]",
                _ => "[{name: alt, port: 8080}]",
            };
            let yaml = format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: team}}\nspec: {{ports: {ports}}}\n"
            );
            (ObjectKind::Service, "team".into(), name, yaml)
        }
        5 => {
            let service = format!("svc{}", slot % 3);
            let name = format!("{service}-{}", slot % 2);
            let address = format!("10.0.{}.{}", slot % 3, variant % 5 + 1);
            let ready = if variant % 4 == 3 { "false" } else { "true" };
            let yaml = format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: team, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8888}}]\nendpoints: [{{addresses: [\"{address}\"], conditions: {{ready: {ready}}}}}]\n"
            );
            (ObjectKind::EndpointSlice, "team".into(), name, yaml)
        }
        _ => {
            let action = if variant.is_multiple_of(2) { "ALLOW" } else { "DENY" };
            let yaml = format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: policy{}, namespace: istio-system}}\nspec: {{action: {action}, rules: [{{to: [{{operation: {{paths: [\"/x/*\"]}}}}]}}]}}\n",
                slot % 2
            );
            (ObjectKind::AuthorizationPolicy, "istio-system".into(), format!("policy{}", slot % 2), yaml)
        }
    }
}

fn parse(yaml: &str) -> Resources {
    let mut resources = Resources::default();
    let problems = resources.add_yaml(yaml, "test.yaml");
    assert!(problems.is_empty(), "{problems:?}\n{yaml}");
    resources
}

/// The model: the YAML of every object present.
type Model = BTreeMap<(ObjectKind, String, String), String>;

fn resources_of(model: &Model, meshed: bool) -> Resources {
    let all: Vec<&str> = model.values().map(String::as_str).collect();
    let mut resources = parse(&all.join("---\n"));
    if meshed {
        resources.meshed_namespaces.insert("team".to_string());
    }
    resources
}

/// What a gateway holding only the deltas would have.
fn apply(replica: &mut TableParts, delta: TableDelta) {
    for (name, listener) in delta.listeners {
        match listener {
            Some(listener) => replica.listeners.insert(name, listener),
            None => replica.listeners.remove(&name),
        };
    }
    for (name, host) in delta.virtual_hosts {
        match host {
            Some(host) => replica.virtual_hosts.insert(name, host),
            None => replica.virtual_hosts.remove(&name),
        };
    }
    for (name, route) in delta.routes {
        match route {
            Some(route) => replica
                .routes
                .insert(name, Placed { parent: route.parent, order: route.order, value: (*route.value).clone() }),
            None => replica.routes.remove(&name),
        };
    }
    for (name, cluster) in delta.clusters {
        match cluster {
            Some(cluster) => replica.clusters.insert(name, (*cluster).clone()),
            None => replica.clusters.remove(&name),
        };
    }
}

#[derive(Clone, Debug)]
enum Op {
    Upsert(u8, u8, u8),
    Delete(u8, u8),
    Mesh(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..7, 0u8..6, 0u8..=255).prop_map(|(k, s, v)| Op::Upsert(k, s, v)),
        2 => (0u8..7, 0u8..6).prop_map(|(k, s)| Op::Delete(k, s)),
        1 => any::<bool>().prop_map(Op::Mesh),
    ]
}

fn run(ops: &[Op], keep_last_good: bool) -> Result<(), TestCaseError> {
    let identity = GatewayIdentity::default();
    let mut model = Model::new();
    let mut meshed = false;
    let mut translator = IncrementalTranslator::new(
        identity.clone(),
        NotebookSettings::default(),
        PathNormalizationMode::default(),
        false,
        keep_last_good,
    );
    let mut reference = LastGood::default();
    let mut replica = TableParts::default();
    apply(&mut replica, translator.take_delta());
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Upsert(kind, slot, variant) => {
                let (kind, ns, name, yaml) = object_yaml(*kind, *slot, *variant);
                model.insert((kind, ns, name), yaml.clone());
                for object in objects_of(&parse(&yaml)) {
                    // The folder's run takes what folder mode keeps: the
                    // objects' routing views.
                    translator.upsert(if keep_last_good { object.routing_view() } else { object });
                }
            }
            Op::Delete(kind, slot) => {
                let (kind, ns, name, _) = object_yaml(*kind, *slot, 0);
                model.remove(&(kind, ns.clone(), name.clone()));
                translator.delete(kind, &ns, &name);
            }
            Op::Mesh(on) => {
                meshed = *on;
                translator.set_meshed_namespace("team", *on);
            }
        }
        let resources = resources_of(&model, meshed);
        let (mut expected, expected_diagnostics) = match keep_last_good {
            true => reference.translate(&resources, &identity),
            false => translate(&resources, &identity),
        };
        expected.version = String::new();
        if expected.listeners.is_empty() {
            // Pieces carry the security table on their listeners (as the
            // discovery protocol does): with no listener, nothing is served
            // and there is nothing to carry it.
            expected.security = SecurityTable::default();
        }
        prop_assert_eq!(&translator.table(), &expected, "step {}: {:?}", step, op);
        prop_assert_eq!(translator.diagnostics(), expected_diagnostics, "step {}: {:?}", step, op);
        apply(&mut replica, translator.take_delta());
        prop_assert_eq!(&replica.assemble(""), &expected, "deltas, step {}: {:?}", step, op);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_of_changes_equals_a_full_translation(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops, false)?;
    }

    #[test]
    fn with_last_good_versions_it_equals_the_folder_reference(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops, true)?;
    }
}

#[test]
fn one_new_notebook_among_many_is_one_route() {
    let mut yaml = String::from(
        "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: kubeflow-gateway, namespace: kubeflow}\nspec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [\"*\"]}]\n",
    );
    for i in 0..500 {
        yaml.push_str(&format!(
            "---\napiVersion: kubeflow.org/v1\nkind: Notebook\nmetadata: {{name: nb{i}, namespace: team}}\nspec: {{template: {{spec: {{containers: [{{name: nb, image: x}}]}}}}}}\n"
        ));
    }
    let mut translator = IncrementalTranslator::from_resources(&parse(&yaml), GatewayIdentity::default(), false);
    let first = translator.take_delta();
    assert_eq!(first.routes.len(), 500);
    let notebook = "apiVersion: kubeflow.org/v1\nkind: Notebook\nmetadata: {name: new, namespace: team}\nspec: {template: {spec: {containers: [{name: nb, image: x}]}}}\n";
    for object in objects_of(&parse(notebook)) {
        translator.upsert(object);
    }
    let delta = translator.take_delta();
    assert_eq!(delta.len(), 1, "{delta:?}");
    assert_eq!(delta.routes.keys().collect::<Vec<_>>(), vec!["http.80/*:80/team.notebook-team-new.0"]);
    translator.delete(ObjectKind::Notebook, "team", "new");
    let delta = translator.take_delta();
    assert_eq!(delta.routes.values().collect::<Vec<_>>(), vec![&None]);
}
