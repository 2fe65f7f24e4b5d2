//! The Kubernetes monitoring manifests (`service.yaml`, `servicemonitor.yaml`,
//! `poddisruptionbudget.yaml`, `networkpolicy.yaml`, `ingress.yaml`) agree with the
//! Deployment, the ConfigMap and the alert rules on names, labels and ports. `.ci/run`
//! validates their schemas (kubernetes-validate, `.ci/validate-crds.py`).

use crate::{RULES, read};

/// The lines of `text` after the first line that is exactly `key` (trimmed), up to a line
/// indented less than or as much as that one.
fn block(text: &str, key: &str) -> String {
    let mut lines = text.lines().skip_while(|l| l.trim() != key);
    let Some(head) = lines.next() else {
        panic!("no `{key}` in:\n{text}")
    };
    let indent = head.len() - head.trim_start().len();
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .map(|l| format!("{}\n", l.trim()))
        .collect()
}

#[test]
fn the_monitoring_manifests_agree_with_the_deployment() {
    let deployment = read("deploy/kubernetes/deployment.yaml");
    assert!(deployment.contains("- name: admin\n              containerPort: 9901\n"));
    let pods = "app.kubernetes.io/name: pms\n";
    assert_eq!(
        block(&deployment, "selector:"),
        format!("matchLabels:\n{pods}")
    );

    // Service `bearerd` selects the Deployment's pods; its name is the scrape job the rules use.
    let service = read("deploy/kubernetes/service.yaml");
    assert!(service.contains("kind: Service\nmetadata:\n  name: bearerd\n"));
    assert_eq!(block(&service, "selector:"), pods);
    assert!(service.contains("- name: admin\n      port: 9901\n      targetPort: admin\n"));
    assert!(read(RULES).contains(r#"up{job="bearerd"}"#));
    let monitor = read("deploy/kubernetes/servicemonitor.yaml");
    assert_eq!(
        block(&monitor, "selector:"),
        format!("matchLabels:\n{}", block(&service, "labels:"))
    );
    assert!(monitor.contains("- port: admin\n      path: /metrics\n"));

    let budget = read("deploy/kubernetes/poddisruptionbudget.yaml");
    assert_eq!(block(&budget, "selector:"), format!("matchLabels:\n{pods}"));

    // The admin port is opened to exactly two peers; no proxy port is opened at all.
    let policy = read("deploy/kubernetes/networkpolicy.yaml");
    assert_eq!(
        block(&policy, "podSelector:"),
        format!("matchLabels:\n{pods}")
    );
    let admin_rule = block(&policy, "- from:");
    assert_eq!(admin_rule.matches("namespaceSelector:").count(), 2);
    assert!(admin_rule.contains("- port: 9901\n"));
    assert!(
        !policy.contains("8081"),
        "the proxy listens on loopback only"
    );

    // The Ingress exposes only the callback, webhooks and install URLs of the admin Service.
    let ingress = read("deploy/kubernetes/ingress.yaml");
    let config = read("deploy/kubernetes/configmap.yaml");
    let connections: Vec<&str> = config
        .lines()
        .filter_map(|l| l.trim().strip_prefix("name = \""))
        .map(|n| n.trim_end_matches('"'))
        .collect();
    let mut allowed = vec![
        "/oauth/callback Exact".to_owned(),
        "/webhooks Prefix".to_owned(),
    ];
    allowed.extend(connections.iter().flat_map(|c| {
        [
            format!("/connections/{c}/install Exact"),
            // The page the install's callback redirects to (reloadable).
            format!("/connections/{c}/installed Exact"),
        ]
    }));
    let lines: Vec<&str> = ingress.lines().map(str::trim).collect();
    let paths: Vec<String> = lines
        .windows(2)
        .filter_map(|w| {
            let path = w[0].strip_prefix("- path: ")?;
            Some(format!("{path} {}", w[1].strip_prefix("pathType: ")?))
        })
        .collect();
    assert_eq!(paths, allowed);
    let backends = lines
        .windows(3)
        .filter(|w| w == &["name: bearerd", "port:", "name: admin"])
        .count();
    assert_eq!(
        backends,
        paths.len(),
        "every path goes to the admin port of Service bearerd"
    );
}
