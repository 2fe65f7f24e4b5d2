//! The PromQL the project ships, gathered for evaluation: every query of the Grafana dashboard
//! (panels, nested rows, template variables) with its Grafana variables substituted, and
//! GitHub's heading anchors of the README, which the rules' `runbook_url`s point at.

use serde_json::Value;

/// One query of the dashboard: `name` says where it is (`panel title / refId`).
#[derive(Debug, Clone)]
pub struct Query {
    pub name: String,
    pub expr: String,
}

/// Grafana's variables as a test evaluates them: every connection, and a rate window that
/// holds enough 1 s scrapes.
pub fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1m")
        .replace("${connection}", ".*")
        .replace("$connection", ".*")
}

/// `label_values(METRIC, LABEL)` (a Grafana function, not PromQL) as the PromQL query that
/// returns the same label values.
fn label_values(query: &str) -> Option<String> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (metric, label) = inner.rsplit_once(',')?;
    Some(format!("count by ({}) ({})", label.trim(), metric.trim()))
}

/// Every panel's targets, rows' nested panels included, and every query variable.
pub fn dashboard_queries(dashboard: &Value) -> Vec<Query> {
    let mut queries = Vec::new();
    let mut panels: Vec<&Value> = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        panels.push(panel);
        panels.extend(panel["panels"].as_array().into_iter().flatten());
    }
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!expr.is_empty(), "a target without expr: {target}");
            queries.push(Query {
                name: format!(
                    "{} / {}",
                    panel["title"].as_str().unwrap_or("?"),
                    target["refId"].as_str().unwrap_or("?")
                ),
                expr: substitute(expr),
            });
        }
    }
    let variables = dashboard["templating"]["list"].as_array();
    for variable in variables.into_iter().flatten() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .unwrap_or_default();
        let expr = label_values(query).unwrap_or_else(|| substitute(query));
        queries.push(Query {
            name: format!("variable {}", variable["name"].as_str().unwrap_or("?")),
            expr,
        });
    }
    queries
}

/// The anchors GitHub gives the README's headings: lower case, punctuation other than `-`
/// and `_` dropped, spaces as `-`.
pub fn readme_anchors(readme: &str) -> Vec<String> {
    readme
        .lines()
        .filter(|l| l.starts_with('#') && l.trim_start_matches('#').starts_with(' '))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

#[test]
fn label_values_and_variables_become_promql() {
    assert_eq!(
        label_values("label_values(bearerd_connection_state, connection)").as_deref(),
        Some("count by (connection) (bearerd_connection_state)")
    );
    assert_eq!(
        substitute(r#"rate(x{connection=~"$connection"}[$__rate_interval])"#),
        r#"rate(x{connection=~".*"}[1m])"#
    );
    assert_eq!(
        readme_anchors("# A\n### Runbook: BearerdDown\nnot # a heading\n#nope"),
        ["a", "runbook-bearerddown"]
    );
}
