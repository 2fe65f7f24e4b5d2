//! The config shipped in `deploy/kubernetes/configmap.yaml` is a valid bearerd config
//! (`bearerd check` accepts it with the Secret's variables set), and the manifests and
//! unit agree with it on the admin port and the config path. `.ci/run` validates the files
//! themselves with hadolint, kubernetes-validate and systemd-analyze.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn deploy_file(path: &str) -> String {
    std::fs::read_to_string(format!("{}/deploy/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The `bearerd.toml: |` block of the ConfigMap, de-indented.
fn configmap_toml() -> String {
    let yaml = deploy_file("kubernetes/configmap.yaml");
    let mut lines = yaml
        .lines()
        .skip_while(|l| l.trim() != "bearerd.toml: |")
        .skip(1);
    let mut toml = String::new();
    for line in lines.by_ref() {
        if !line.is_empty() && !line.starts_with("    ") {
            break;
        }
        toml.push_str(line.strip_prefix("    ").unwrap_or(line));
        toml.push('\n');
    }
    toml
}

#[test]
fn the_kubernetes_config_passes_bearerd_check() {
    let toml = configmap_toml();
    assert!(toml.contains("kind = \"postgres\""), "{toml}");
    let dir = support::TempDir::new("deploy");
    let path = dir.file("bearerd.toml", &toml);
    let output = Command::new(env!("CARGO_BIN_EXE_bearerd"))
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("BEARERD_CONFIG")
        .env("BEARERD_ADMIN_TOKEN", "admin-token-of-32-random-chars-x")
        .env("BEARERD_STORE_KEY", KEY)
        .env("DATABASE_URL", "postgres://bearerd@127.0.0.1:5432/bearerd")
        .env("CLOUDBEDS_CLIENT_ID", "id")
        .env("CLOUDBEDS_CLIENT_SECRET", "secret")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("store=postgres"), "{text}");
}

#[test]
fn manifests_and_unit_agree_with_the_config() {
    let toml = configmap_toml();
    let deployment = deploy_file("kubernetes/deployment.yaml");
    assert!(toml.contains("listen = \"0.0.0.0:9901\""));
    assert!(deployment.contains("containerPort: 9901"));
    assert!(deployment.contains("path: /healthz") && deployment.contains("path: /readyz"));
    assert!(deployment.contains("prometheus.io/port: \"9901\""));
    assert!(deployment.contains("mountPath: /etc/bearerd"));
    let dockerfile = deploy_file("Dockerfile");
    assert!(dockerfile.contains("BEARERD_CONFIG=/etc/bearerd/bearerd.toml"));
    let unit = deploy_file("bearerd.service");
    assert!(unit.contains("--config /etc/bearerd/bearerd.toml"));
    assert!(unit.contains("StateDirectory=bearerd"));
}
