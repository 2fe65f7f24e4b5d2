//! Configuration errors (SPEC section 2): every error names its key path and what is wrong,
//! never a secret's value; presets fill their defaults; an unreadable secret is a
//! misconfigured connection, not a config error; `config.example.toml` parses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use bearerd::config::{ClientAuth, Config, ConfigError, GrantKind, Provider, Revocation};

const ADMIN: &str = r#"
[admin]
listen = "127.0.0.1:9901"
public_url = "http://127.0.0.1:9901"
"#;

/// A valid generic client_credentials connection with `extra` lines appended.
fn connection(name: &str, extra: &str) -> String {
    format!(
        r#"
[[connection]]
name = "{name}"
provider = "oauth2"
listen = "127.0.0.1:0"
upstream = "https://api.example.com"
grant = "client_credentials"
token_url = "https://idp.example.com/token"
client_id = "bearerd"
client_secret = "not-the-secret-under-test"
{extra}
"#
    )
}

fn one_connection(extra: &str) -> String {
    format!("{ADMIN}{}", connection("crm", extra))
}

fn error(text: &str) -> ConfigError {
    match Config::from_toml_str(text) {
        Ok(_) => panic!("config should be rejected:\n{text}"),
        Err(error) => error,
    }
}

fn config(text: &str) -> Config {
    Config::from_toml_str(text).unwrap_or_else(|e| panic!("config should parse: {e}\n{text}"))
}

/// Asserts the error's text contains each of `needles`; returns the text.
fn assert_mentions(error: &ConfigError, needles: &[&str]) -> String {
    let text = error.to_string();
    for needle in needles {
        assert!(
            text.contains(needle),
            "error should mention `{needle}`: {text}"
        );
    }
    text
}

#[test]
fn the_base_config_is_valid() {
    let c = config(&one_connection(""));
    assert_eq!(c.connections.len(), 1);
    assert_eq!(c.connections[0].name, "crm");
}

#[test]
fn an_unknown_top_level_key_is_named() {
    let text = format!("listen_all = true\n{}", one_connection(""));
    assert_mentions(&error(&text), &["listen_all"]);
}

#[test]
fn an_unknown_admin_key_is_named_with_its_table() {
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:9901\"\nlisten_port = 9901\n{}",
        connection("crm", "")
    );
    assert_mentions(&error(&text), &["admin", "listen_port"]);
}

#[test]
fn an_unknown_connection_key_is_named_with_its_index() {
    let e = error(&one_connection("upstream_url = \"https://x.example\""));
    assert_mentions(&e, &["connection[0]", "upstream_url"]);
    let text = format!(
        "{ADMIN}{}{}",
        connection("one", ""),
        connection("two", "retries = 3")
    );
    assert_mentions(&error(&text), &["connection[1]", "retries"]);
}

#[test]
fn an_unknown_store_key_is_named() {
    let text = format!(
        "{}\n[store]\nkind = \"file\"\npath = \"/tmp/x\"\n",
        one_connection("")
    );
    assert_mentions(&error(&text), &["store", "path"]);
}

#[test]
fn a_bad_listen_address_names_connection_listen() {
    let text =
        one_connection("").replace("listen = \"127.0.0.1:0\"", "listen = \"localhost:eighty\"");
    let e = error(&text);
    assert!(e.names("connection[0].listen"), "{e}");
    assert_mentions(&e, &["connection[0].listen", "localhost:eighty"]);
}

#[test]
fn a_bad_admin_listen_address_names_admin_listen() {
    let text = format!("[admin]\nlisten = \"9901\"\n{}", connection("crm", ""));
    let e = error(&text);
    assert!(e.names("admin.listen"), "{e}");
}

#[test]
fn a_bad_duration_names_its_key() {
    let e = error(&one_connection("timeout = \"soon\""));
    assert!(e.names("connection[0].timeout"), "{e}");
    assert_mentions(&e, &["connection[0].timeout", "soon"]);
    let e = error(&one_connection("refresh_skew = \"5 fortnights\""));
    assert!(e.names("connection[0].refresh_skew"), "{e}");
    let e = error(&format!(
        "shutdown_grace = \"later\"\n{}",
        one_connection("")
    ));
    assert!(e.names("shutdown_grace"), "{e}");
}

#[test]
fn a_bad_size_names_its_key() {
    let e = error(&one_connection("max_body = \"lots\""));
    assert!(e.names("connection[0].max_body"), "{e}");
    assert_mentions(&e, &["connection[0].max_body", "lots"]);
    let e = error(&one_connection("replay_body_limit = \"1 potato\""));
    assert!(e.names("connection[0].replay_body_limit"), "{e}");
}

#[test]
fn every_problem_of_a_connection_is_reported_at_once() {
    let text = one_connection("timeout = \"soon\"\nmax_body = \"lots\"")
        .replace("listen = \"127.0.0.1:0\"", "listen = \"nowhere\"");
    let e = error(&text);
    for key in [
        "connection[0].listen",
        "connection[0].timeout",
        "connection[0].max_body",
    ] {
        assert!(e.names(key), "`{key}` reported: {e}");
    }
    assert_eq!(e.to_string().lines().count(), e.problems.len(), "{e}");
}

#[test]
fn problems_after_a_bad_refresh_skew_or_max_body_are_still_reported() {
    // config/validate.rs: "Problems are collected, not stopped at, so one run of
    // `bearerd check` shows every mistake."
    let e = error(&one_connection(
        "refresh_skew = \"soon\"\nmax_body = \"lots\"\nprobe = \"no-slash\"\nscopes = [\"a b\"]",
    ));
    for key in [
        "connection[0].refresh_skew",
        "connection[0].max_body",
        "connection[0].probe",
        "connection[0].scopes[0]",
    ] {
        assert!(e.names(key), "`{key}` reported: {e}");
    }
}

#[test]
fn an_unknown_provider_is_named() {
    let text = one_connection("").replace("provider = \"oauth2\"", "provider = \"okta\"");
    let e = error(&text);
    assert!(e.names("connection[0].provider"), "{e}");
    assert_mentions(&e, &["connection[0].provider", "okta"]);
}

#[test]
fn an_unknown_grant_is_named() {
    let text = one_connection("").replace("grant = \"client_credentials\"", "grant = \"password\"");
    assert!(error(&text).names("connection[0].grant"));
}

#[test]
fn oauth2_without_a_token_url_names_token_url() {
    let text = one_connection("").replace("token_url = \"https://idp.example.com/token\"\n", "");
    assert!(!text.contains("token_url"));
    let e = error(&text);
    assert!(e.names("connection[0].token_url"), "{e}");
}

#[test]
fn oauth2_authorization_code_without_an_authorize_url_names_it() {
    let text = one_connection("").replace(
        "grant = \"client_credentials\"",
        "grant = \"authorization_code\"",
    );
    let e = error(&text);
    assert!(e.names("connection[0].authorize_url"), "{e}");
}

#[test]
fn a_bad_upstream_url_is_named() {
    for bad in [
        "api.example.com",
        "ftp://api.example.com",
        "https://x.example/?q=1",
    ] {
        let text = one_connection("").replace(
            "upstream = \"https://api.example.com\"",
            &format!("upstream = \"{bad}\""),
        );
        let e = error(&text);
        assert!(e.names("connection[0].upstream"), "{bad}: {e}");
    }
}

#[test]
fn duplicate_names_are_an_error() {
    let text = format!("{ADMIN}{}{}", connection("crm", ""), connection("crm", ""));
    let e = error(&text);
    assert!(e.names("connection[1].name"), "{e}");
    assert_mentions(&e, &["connection[1].name", "crm"]);
}

#[test]
fn a_bad_connection_name_is_an_error() {
    for bad in ["CRM", "-crm", "crm_1", ""] {
        let text = format!("{ADMIN}{}", connection(bad, ""));
        assert!(error(&text).names("connection[0].name"), "`{bad}`");
    }
}

#[test]
fn the_same_listen_address_twice_is_an_error() {
    let text = format!("{ADMIN}{}{}", connection("one", ""), connection("two", ""))
        .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:8081\"");
    assert!(error(&text).names("connection[1].listen"));
    let text =
        one_connection("").replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:9901\"");
    assert!(
        error(&text).names("connection[0].listen"),
        "a connection cannot take the admin address"
    );
}

#[test]
fn a_non_loopback_admin_listen_needs_an_auth_token() {
    let text = format!(
        "[admin]\nlisten = \"0.0.0.0:9901\"\n{}",
        connection("crm", "")
    );
    let e = error(&text);
    assert!(e.names("admin.auth_token"), "{e}");
    assert_mentions(&e, &["admin.auth_token"]);
    let with_token = format!(
        "[admin]\nlisten = \"0.0.0.0:9901\"\nauth_token = \"admin-token-value\"\n{}",
        connection("crm", "")
    );
    let c = config(&with_token);
    assert_eq!(
        c.admin.auth_token.as_ref().map(|t| t.secret().to_owned()),
        Some("admin-token-value".to_owned())
    );
}

#[test]
fn a_non_loopback_proxy_listen_needs_allow_clients() {
    let exposed = |extra: &str| {
        one_connection(extra).replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:8081\"")
    };
    let e = error(&exposed(""));
    assert!(e.names("connection[0].allow_clients"), "{e}");
    assert_mentions(&e, &["0.0.0.0:8081", "not a loopback address"]);
    let c = config(&exposed("allow_clients = [\"10.0.0.0/8\", \"192.0.2.7\"]"));
    let networks: Vec<String> = c.connections[0]
        .allow_clients
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(networks, ["10.0.0.0/8", "192.0.2.7/32"]);
    let e = error(&exposed("allow_clients = [\"10.0.0.0/33\"]"));
    assert!(e.names("connection[0].allow_clients[0]"), "{e}");
    // A loopback listener may list networks too (they then apply), or none.
    let c = config(&one_connection("allow_clients = [\"127.0.0.0/8\"]"));
    assert_eq!(c.connections[0].allow_clients.len(), 1);
    assert!(
        config(&one_connection("")).connections[0]
            .allow_clients
            .is_empty()
    );
}

/// Configs whose errors are about (or next to) a literal secret; none may echo it.
#[test]
fn a_literal_secret_never_appears_in_an_error() {
    const SECRET: &str = "s3cr3t-Literal-Value-9f8e7d";
    const NUMBER: &str = "12345678";
    let secret_line = format!("client_secret = \"{SECRET}\"");
    let with_secret = |extra: &str| {
        one_connection(extra).replace(
            "client_secret = \"not-the-secret-under-test\"",
            &secret_line,
        )
    };
    let cases = [
        // The secret itself has the wrong shape.
        one_connection("").replace(
            "client_secret = \"not-the-secret-under-test\"",
            &format!("client_secret = {NUMBER}"),
        ),
        one_connection("").replace(
            "client_secret = \"not-the-secret-under-test\"",
            &format!("client_secret = [\"{SECRET}\"]"),
        ),
        one_connection("").replace(
            "client_secret = \"not-the-secret-under-test\"",
            &format!("client_secret = {{ literal = \"{SECRET}\" }}"),
        ),
        one_connection("").replace(
            "client_secret = \"not-the-secret-under-test\"",
            &format!("client_secret = {{ env = \"X\", value = \"{SECRET}\" }}"),
        ),
        one_connection("").replace(
            "client_secret = \"not-the-secret-under-test\"",
            &format!("client_secret = {{ env = {NUMBER} }}"),
        ),
        // TOML syntax errors on the secret's own line.
        one_connection("").replace(
            "client_secret = \"not-the-secret-under-test\"",
            &format!("client_secret = \"{SECRET}\" trailing"),
        ),
        one_connection("").replace(
            "client_secret = \"not-the-secret-under-test\"",
            &format!("client_secret = \"{SECRET}"),
        ),
        one_connection("").replace(
            "client_secret = \"not-the-secret-under-test\"",
            &format!("client_secret = \"{SECRET}\\q\""),
        ),
        // A valid literal secret next to some other error.
        with_secret("timeout = \"soon\""),
        with_secret("unknown_key = 1"),
        with_secret("").replace("provider = \"oauth2\"", "provider = \"okta\""),
        format!(
            "{}{}",
            with_secret(""),
            connection("crm", "").replace("not-the-secret-under-test", SECRET)
        ),
        // Other secrets.
        format!(
            "[admin]\nlisten = \"0.0.0.0:9901\"\nauth_token = {NUMBER}\n{}",
            connection("crm", "")
        ),
        format!(
            "{}\n[store]\nkind = \"file\"\nurl = \"postgres://u:{SECRET}@db/x\"\n",
            one_connection("")
        ),
        format!(
            "{}\n[store]\nkind = \"postgres\"\nurl = \"postgres://u:{SECRET}@db/x\"\ndir = \"/x\"\n",
            one_connection("")
        ),
        format!("{}\n[store]\nkey = [\"{SECRET}\"]\n", one_connection("")),
    ];
    for text in cases {
        let e = error(&text);
        for shown in [e.to_string(), format!("{e:?}")] {
            assert!(
                !shown.contains(SECRET) && !shown.contains(NUMBER),
                "an error echoed a secret:\n{shown}\nfor config:\n{text}"
            );
        }
        assert!(!e.problems.is_empty(), "the error says something");
    }
}

#[test]
fn a_valid_configs_debug_output_redacts_secrets() {
    const SECRET: &str = "s3cr3t-Debug-Value-1a2b3c";
    let text = one_connection("").replace("not-the-secret-under-test", SECRET);
    let c = config(&text);
    assert!(!format!("{c:?}").contains(SECRET), "Config's Debug leaks");
    let creds = c.connections[0].credentials.as_ref().unwrap();
    assert_eq!(
        creds.client_secret.as_ref().map(|s| s.secret()),
        Some(SECRET)
    );
}

#[test]
fn the_example_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("config.example.toml: {e}"));
    let names: Vec<&str> = c.connections.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["cloudbeds", "apaleo", "cloudbeds-key"]);
    assert_eq!(c.connections[0].provider, Provider::Cloudbeds);
    assert_eq!(c.connections[0].grant, GrantKind::AuthorizationCode);
    assert_eq!(c.connections[1].provider, Provider::Apaleo);
    assert_eq!(c.connections[1].grant, GrantKind::ClientCredentials);
    assert_eq!(c.connections[2].provider, Provider::Cloudbeds);
    assert_eq!(c.connections[2].grant, GrantKind::ApiKey);
    assert!(c.connections[2].keys.configured.is_some());
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9901");
    assert_eq!(c.store.kind.as_str(), "file");
}

#[test]
fn a_missing_config_file_is_an_error_naming_the_file() {
    let path = Path::new("/nonexistent/bearerd-test/bearerd.toml");
    let e = Config::load(path).expect_err("missing file is an error");
    assert_mentions(&e, &["/nonexistent/bearerd-test/bearerd.toml"]);
}

fn preset_connection(provider: &str, grant: &str, extra: &str) -> Config {
    config(&format!(
        r#"{ADMIN}
[[connection]]
name = "hotel"
provider = "{provider}"
listen = "127.0.0.1:0"
upstream = "https://api.{provider}.com"
grant = "{grant}"
client_id = "id"
client_secret = "secret"
scopes = ["read"]
{extra}
"#
    ))
}

#[test]
fn the_cloudbeds_preset_fills_its_endpoints() {
    let c = preset_connection("cloudbeds", "authorization_code", "");
    let c = &c.connections[0];
    assert_eq!(
        c.token_url.as_ref().unwrap().as_str(),
        "https://api.cloudbeds.com/api/v1.3/access_token"
    );
    assert_eq!(
        c.authorize_url.as_ref().map(|u| u.as_str()),
        Some("https://hotels.cloudbeds.com/api/v1.3/oauth")
    );
    assert_eq!(c.client_auth, ClientAuth::ClientSecretPost);
    match &c.revocation {
        Revocation::CloudbedsAppState(url) => {
            assert_eq!(
                url.as_str(),
                "https://api.cloudbeds.com/api/v1.3/postAppState"
            );
        }
        other => panic!("cloudbeds disconnects with postAppState, not {other:?}"),
    }
    assert_eq!(c.scopes, ["read"], "cloudbeds adds no scope");
    assert_eq!(
        c.redirect_uri.as_str(),
        "http://127.0.0.1:9901/oauth/callback",
        "redirect_uri defaults to admin.public_url + /oauth/callback"
    );
}

#[test]
fn the_apaleo_preset_fills_its_endpoints_and_offline_access() {
    let c = preset_connection("apaleo", "authorization_code", "");
    let c = &c.connections[0];
    assert_eq!(
        c.token_url.as_ref().unwrap().as_str(),
        "https://identity.apaleo.com/connect/token"
    );
    assert_eq!(
        c.authorize_url.as_ref().map(|u| u.as_str()),
        Some("https://identity.apaleo.com/connect/authorize")
    );
    assert_eq!(
        c.revocation,
        Revocation::Rfc7009(
            "https://identity.apaleo.com/connect/revocation"
                .parse()
                .unwrap()
        )
    );
    assert_eq!(c.client_auth, ClientAuth::ClientSecretPost);
    assert_eq!(c.scopes, ["read", "offline_access"]);

    let c = preset_connection("apaleo", "client_credentials", "");
    assert_eq!(
        c.connections[0].scopes,
        ["read"],
        "no refresh token without a user: no offline_access"
    );
    assert_eq!(
        c.connections[0].token_url.as_ref().unwrap().as_str(),
        "https://identity.apaleo.com/connect/token"
    );

    let c = config(
        &format!(
            "{ADMIN}{}",
            connection("a", "scopes = [\"offline_access\", \"read\"]")
        )
        .replace("provider = \"oauth2\"", "provider = \"apaleo\"")
        .replace(
            "grant = \"client_credentials\"",
            "grant = \"authorization_code\"",
        ),
    );
    assert_eq!(
        c.connections[0].scopes,
        ["offline_access", "read"],
        "offline_access is not added twice"
    );
}

#[test]
fn keys_in_the_file_win_over_the_preset() {
    let c = preset_connection(
        "cloudbeds",
        "authorization_code",
        "token_url = \"https://proxy.example.com/token\"\nclient_auth = \"client_secret_basic\"\nrevoke_url = \"https://proxy.example.com/revoke\"",
    );
    let c = &c.connections[0];
    assert_eq!(
        c.token_url.as_ref().unwrap().as_str(),
        "https://proxy.example.com/token"
    );
    assert_eq!(c.client_auth, ClientAuth::ClientSecretBasic);
    assert_eq!(
        c.revocation,
        Revocation::Rfc7009("https://proxy.example.com/revoke".parse().unwrap())
    );
    let generic = config(&one_connection(""));
    assert_eq!(
        generic.connections[0].client_auth,
        ClientAuth::ClientSecretBasic,
        "oauth2 defaults to client_secret_basic"
    );
}

#[test]
fn an_unset_env_secret_is_a_misconfigured_connection_not_a_config_error() {
    const VAR: &str = "BEARERD_TEST_SURELY_UNSET_VAR_7Q2X";
    assert!(std::env::var_os(VAR).is_none(), "{VAR} must not be set");
    let text = one_connection("").replace(
        "client_secret = \"not-the-secret-under-test\"",
        &format!("client_secret = {{ env = \"{VAR}\" }}"),
    );
    let c = config(&text);
    match &c.connections[0].credentials {
        Ok(_) => panic!("credentials cannot be resolved from an unset variable"),
        Err(reason) => {
            assert!(reason.contains(VAR), "names the variable: {reason}");
            assert!(reason.contains("client_secret"), "names the key: {reason}");
        }
    }

    let text = one_connection("").replace(
        "client_id = \"bearerd\"",
        &format!("client_id = {{ env = \"{VAR}\" }}"),
    );
    let reason = config(&text).connections[0]
        .credentials
        .clone()
        .err()
        .unwrap();
    assert!(
        reason.contains(VAR) && reason.contains("client_id"),
        "{reason}"
    );

    // Both unreadable: both named at once.
    let text = one_connection("")
        .replace(
            "client_id = \"bearerd\"",
            &format!("client_id = {{ env = \"{VAR}\" }}"),
        )
        .replace(
            "client_secret = \"not-the-secret-under-test\"",
            &format!("client_secret = {{ env = \"{VAR}_2\" }}"),
        );
    let reason = config(&text).connections[0]
        .credentials
        .clone()
        .err()
        .unwrap();
    assert!(
        reason.contains("client_id") && reason.contains("client_secret"),
        "{reason}"
    );
}

#[test]
fn file_secrets_are_read_and_trimmed_or_named_when_unreadable() {
    let dir = support::TempDir::new("config-secret");
    let file = dir.file("secret", "from-a-file\n");
    let text = one_connection("").replace(
        "client_secret = \"not-the-secret-under-test\"",
        &format!("client_secret = {{ file = \"{}\" }}", file.display()),
    );
    let c = config(&text);
    let creds = c.connections[0].credentials.as_ref().unwrap();
    assert_eq!(
        creds.client_secret.as_ref().map(|s| s.secret()),
        Some("from-a-file"),
        "one trailing newline is trimmed"
    );

    let missing = dir.path().join("missing");
    let text = one_connection("").replace(
        "client_secret = \"not-the-secret-under-test\"",
        &format!("client_secret = {{ file = \"{}\" }}", missing.display()),
    );
    let reason = config(&text).connections[0]
        .credentials
        .clone()
        .err()
        .unwrap();
    assert!(reason.contains(&missing.display().to_string()), "{reason}");
}

#[test]
fn the_cloudbeds_preset_limits_to_ten_requests_a_second_unless_turned_off() {
    use bearerd::config::{Over, RateScope};
    let preset = preset_connection("cloudbeds", "authorization_code", "");
    let limit = preset.connections[0]
        .rate_limit
        .expect("cloudbeds has a limit");
    assert_eq!((limit.rps, limit.burst), (10, 10));
    assert_eq!((limit.per, limit.over), (RateScope::Connection, Over::Wait));
    assert_eq!(limit.max_wait, std::time::Duration::from_secs(5));
    let off = preset_connection("cloudbeds", "authorization_code", "rate_limit = false");
    assert_eq!(off.connections[0].rate_limit, None);
    let none = config(&one_connection(""));
    assert_eq!(
        none.connections[0].rate_limit, None,
        "oauth2 has no preset limit"
    );
    let own = config(&one_connection(
        r#"rate_limit = { rps = 5, burst = 2, per = "tenant", over = "reject", max_wait = "2s" }"#,
    ));
    let limit = own.connections[0].rate_limit.unwrap();
    assert_eq!((limit.rps, limit.burst), (5, 2));
    assert_eq!((limit.per, limit.over), (RateScope::Tenant, Over::Reject));
}

#[test]
fn a_malformed_rate_limit_names_its_key() {
    for (extra, key) in [
        ("rate_limit = true", "connection[0].rate_limit"),
        ("rate_limit = { burst = 3 }", "connection[0].rate_limit.rps"),
        ("rate_limit = { rps = 0 }", "connection[0].rate_limit.rps"),
        (
            "rate_limit = { rps = \"ten\" }",
            "connection[0].rate_limit.rps",
        ),
        (
            "rate_limit = { rps = 10, over = \"drop\" }",
            "connection[0].rate_limit.over",
        ),
        (
            "rate_limit = { rps = 10, per = \"ip\" }",
            "connection[0].rate_limit.per",
        ),
        (
            "rate_limit = { rps = 10, max_wait = \"soon\" }",
            "connection[0].rate_limit.max_wait",
        ),
        (
            "rate_limit = { rps = 10, rsp = 3 }",
            "connection[0].rate_limit.rsp",
        ),
    ] {
        let e = error(&one_connection(extra));
        assert!(e.names(key), "{extra}: {e}");
    }
}

#[test]
fn a_malformed_notify_table_names_its_key_and_not_the_secret() {
    let valid = "whsec_c2VjcmV0LWtleS1mb3ItdGhlLW5vdGlmeS10ZXN0cw==";
    let ok = config(&format!(
        "{}\n[notify]\nurl = \"https://ops.example.com/hook\"\nsecret = \"{valid}\"\n",
        one_connection("")
    ));
    assert_eq!(
        ok.notify.as_ref().map(|n| n.url.as_str()),
        Some("https://ops.example.com/hook")
    );
    for (table, key) in [
        ("url = \"nowhere\"\nsecret = \"{valid}\"", "notify.url"),
        (
            "url = \"https://h/x\"\nsecret = \"plain-secret-value-123\"",
            "notify.secret",
        ),
        (
            "url = \"https://h/x\"\nsecret = \"whsec_###not-base64###\"",
            "notify.secret",
        ),
        ("url = \"https://h/x\"", "missing field `secret`"),
    ] {
        let text = format!(
            "{}\n[notify]\n{}\n",
            one_connection(""),
            table.replace("{valid}", valid)
        );
        let e = error(&text);
        assert!(e.names(key) || e.to_string().contains(key), "{table}: {e}");
        for secret in ["plain-secret-value-123", "###not-base64###"] {
            assert!(!e.to_string().contains(secret), "{e}");
        }
    }
}

/// A connection `hotel` with only the lines given after its address (SPEC section 10 keys).
fn key_connection(provider: &str, lines: &str) -> String {
    format!(
        r#"{ADMIN}
[[connection]]
name = "hotel"
provider = "{provider}"
listen = "127.0.0.1:0"
upstream = "https://api.example.com"
{lines}
"#
    )
}

#[test]
fn an_api_key_from_the_config_needs_no_client_or_token_endpoint() {
    let c = config(&key_connection(
        "cloudbeds",
        "grant = \"api_key\"\napi_key = \"cbat_literal\"",
    ));
    let c = &c.connections[0];
    assert_eq!(c.grant, GrantKind::ApiKey);
    assert_eq!(c.keys.header.as_ref().unwrap().as_str(), "x-api-key");
    assert!(matches!(&c.keys.configured, Some(Ok(_))));
    let (idle, _) = c.keys.keepalive.clone().unwrap();
    assert_eq!(idle, std::time::Duration::from_secs(7 * 24 * 3600));

    // oauth2: a header is required, a probe makes keepalive possible.
    let c = config(&key_connection(
        "oauth2",
        "grant = \"api_key\"\napi_key = \"k\"\napi_key_header = \"X-Key\"\nprobe = \"/me\"\nkeepalive = \"2s\"",
    ));
    assert_eq!(
        c.connections[0].keys.header.as_ref().unwrap().as_str(),
        "x-key"
    );
    assert!(c.connections[0].keys.keepalive.is_some());
}

#[test]
fn malformed_api_key_combinations_name_the_key() {
    let cases: [(&str, &str, &str); 7] = [
        // api_key without grant = "api_key".
        (
            "cloudbeds",
            "grant = \"authorization_code\"\nclient_id = \"i\"\nclient_secret = \"s\"\napi_key = \"cbat_x\"",
            "connection[0].api_key",
        ),
        // grant = "api_key" with neither a key nor client credentials.
        ("cloudbeds", "grant = \"api_key\"", "connection[0].api_key"),
        // oauth2 key without a header to send it in.
        (
            "oauth2",
            "grant = \"api_key\"\napi_key = \"k\"",
            "connection[0].api_key_header",
        ),
        // A header bearerd must not let a key replace.
        (
            "cloudbeds",
            "grant = \"api_key\"\napi_key = \"k\"\napi_key_header = \"Host\"",
            "connection[0].api_key_header",
        ),
        // client_credentials never holds a key.
        (
            "oauth2",
            "grant = \"client_credentials\"\ntoken_url = \"https://idp.example.com/t\"\nclient_id = \"i\"\nkeepalive = \"1h\"",
            "connection[0].keepalive",
        ),
        // keepalive with nothing to call (oauth2 without probe).
        (
            "oauth2",
            "grant = \"api_key\"\napi_key = \"k\"\napi_key_header = \"x-key\"\nkeepalive = \"1h\"",
            "connection[0].keepalive",
        ),
        // Without a key from the config, client_id is required.
        (
            "cloudbeds",
            "grant = \"authorization_code\"\nclient_secret = \"s\"",
            "connection[0].client_id",
        ),
    ];
    for (provider, lines, key) in cases {
        let e = error(&key_connection(provider, lines));
        assert!(e.names(key), "{key} for:\n{lines}\n-> {e}");
        assert!(!e.to_string().contains("cbat_x"), "no secret in: {e}");
    }
}

#[test]
fn an_unreadable_api_key_is_a_misconfigured_connection_not_a_config_error() {
    let c = config(&key_connection(
        "cloudbeds",
        "grant = \"api_key\"\napi_key = { env = \"BEARERD_TEST_KEY_NOT_SET_ANYWHERE\" }",
    ));
    let Some(Err(reason)) = &c.connections[0].keys.configured else {
        panic!("the key cannot be read");
    };
    assert!(reason.starts_with("connection[0].api_key: "), "{reason}");
    assert!(
        reason.contains("BEARERD_TEST_KEY_NOT_SET_ANYWHERE"),
        "{reason}"
    );
}

#[test]
fn a_cloudbeds_app_may_hold_keys_but_not_one_from_the_config() {
    let app = "client_id = \"i\"\nclient_secret = \"s\"\ntenants = \"header:X-Property-ID\"";
    // Each tenant's key comes from its install (automatic delivery).
    let c = config(&key_connection(
        "cloudbeds",
        &format!("grant = \"api_key\"\n{app}"),
    ));
    assert_eq!(c.connections[0].grant, GrantKind::ApiKey);
    assert!(c.connections[0].tenants.is_some());
    // One property's key from the config cannot serve an app's hotels.
    let e = error(&key_connection(
        "cloudbeds",
        &format!("grant = \"api_key\"\napi_key = \"cbat_x\"\n{app}"),
    ));
    assert!(e.names("connection[0].api_key"), "{e}");
    assert!(!e.to_string().contains("cbat_x"), "no secret in: {e}");
    // Keys per tenant are the Cloudbeds install flow's.
    let e = error(&key_connection(
        "oauth2",
        &format!(
            "grant = \"api_key\"\napi_key_header = \"x-key\"\ntoken_url = \"https://idp.example.com/t\"\nauthorize_url = \"https://idp.example.com/a\"\n{app}"
        ),
    ));
    assert!(e.names("connection[0].tenants"), "{e}");
}
