//! The deployment's monitoring queries only real metrics: every `playground_*` name that the Prometheus
//! files (scrape configs, alert rules and their tests, `deploy/prometheus/*.yml`) and the Grafana
//! dashboards (`deploy/grafana/dashboards/*.json`) mention must appear in the `/metrics` of a running
//! cluster of 3 nodes and 2 gateways, after a few API calls have given the histograms samples.
//! A rule or panel naming a metric that does not exist (a typo, a renamed metric) fails this test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use simulations::{ProcessCluster, ADMIN_TOKEN};

const BIN: &str = env!("CARGO_BIN_EXE_playground");

/// The files whose metric names are checked: (folder under the repository root, file extension).
const SOURCES: &[(&str, &str)] = &[("deploy/prometheus", "yml"), ("deploy/grafana/dashboards", "json")];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("nodes/ is inside the repository").to_owned()
}

/// Every `playground_[a-z0-9_]+` token of `text` that does not continue a longer identifier.
fn metric_names(text: &str) -> BTreeSet<String> {
    const PREFIX: &str = "playground_";
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(PREFIX).map(|i| from + i) {
        let preceded = at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        let mut end = at + PREFIX.len();
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase() || bytes[end].is_ascii_digit() || bytes[end] == b'_')
        {
            end += 1;
        }
        if !preceded && end > at + PREFIX.len() {
            names.insert(text[at..end].trim_end_matches('_').to_owned());
        }
        from = end;
    }
    names
}

/// Metric name → the files that reference it.
fn referenced_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let root = repo_root();
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (dir, ext) in SOURCES {
        let entries = std::fs::read_dir(root.join(dir)).unwrap_or_else(|e| panic!("read {dir}: {e}"));
        let mut files: Vec<PathBuf> = entries
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == *ext))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no *.{ext} file under {dir}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            let shown = file.strip_prefix(&root).unwrap_or(&file).display().to_string();
            for name in metric_names(&text) {
                found.entry(name).or_default().insert(shown.clone());
            }
        }
    }
    found
}

/// What a set of `/metrics` scrapes exposes: every sample name, and each family's type.
#[derive(Default)]
struct Exposed {
    samples: BTreeSet<String>,
    types: BTreeMap<String, String>,
}

impl Exposed {
    fn add(&mut self, text: &str) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    self.types.insert(name.to_owned(), kind.to_owned());
                }
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                self.samples.insert(line[..end].to_owned());
            }
        }
    }

    /// Whether `name` is exposed with at least one sample: as such, or (for `_bucket`, `_sum`,
    /// `_count`) as a series of a histogram or summary family.
    fn covers(&self, name: &str) -> bool {
        if self.samples.contains(name) {
            return true;
        }
        ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix).is_some_and(|family| {
                matches!(self.types.get(family).map(String::as_str), Some("histogram" | "summary"))
                    && self.samples.iter().any(|s| s.starts_with(family))
            })
        })
    }
}

/// Register, log in, order, read, pay and look at the cluster, through both gateways.
async fn exercise(cluster: &ProcessCluster) {
    let (g1, g2) = (cluster.gateway(0), cluster.gateway(1));
    for (i, g) in [&g1, &g2].into_iter().enumerate() {
        let email = format!("metrics-{i}@example.com");
        let (user, token) = g.signup(&email).await.expect("register and log in");
        let order = g.create_order(&token, "SKU-1", Some(&format!("order-{i}"))).await.expect("create an order");
        assert_eq!(order.status, 201, "{}", order.text);
        let id = order.field("id");
        let paid = g.send(Method::POST, &format!("/v1/orders/{id}/pay"), Some(&token), None, &[]).await.expect("pay");
        assert_eq!(paid.status, 200, "{}", paid.text);
        assert_eq!(g.get(&format!("/v1/orders/{id}"), Some(&token)).await.expect("get").status, 200);
        assert_eq!(g.get(&format!("/v1/users/{user}/orders"), Some(&token)).await.expect("list").status, 200);
        assert_eq!(g.get("/v1/no-such-route", None).await.expect("404").status, 404);
        assert_eq!(g.get("/v1/cluster", Some(ADMIN_TOKEN)).await.expect("cluster view").status, 200);
    }
}

async fn scrape_all(cluster: &ProcessCluster) -> Exposed {
    let mut exposed = Exposed::default();
    for member in cluster.nodes.iter().chain(cluster.gateways.iter()) {
        let r = member.api().get("/metrics", None).await.unwrap_or_else(|e| panic!("scrape {}: {e}", member.name));
        assert_eq!(r.status, 200, "/metrics of {}", member.name);
        assert!(r.text.contains("# TYPE playground_"), "{} exposes no playground metrics", member.name);
        exposed.add(&r.text);
    }
    exposed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboards_and_alerts_query_exists() {
    let referenced = referenced_metrics();
    // The extraction itself: the rules name these, so finding none would mean a broken scan.
    for expected in ["playground_raft_is_leader", "playground_http_request_duration_seconds_bucket"] {
        assert!(referenced.contains_key(expected), "{expected} not found in the deploy files: {referenced:?}");
    }

    let cluster = ProcessCluster::start(BIN.as_ref(), 3, 2, 16, &[]).await.expect("a 3-node cluster starts");
    exercise(&cluster).await;

    // Samples land right after the calls; retry briefly in case a background sampler is late.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (exposed, missing) = loop {
        let exposed = scrape_all(&cluster).await;
        let missing: Vec<String> = referenced
            .iter()
            .filter(|(name, _)| !exposed.covers(name))
            .map(|(name, files)| format!("{name} (in {})", files.iter().cloned().collect::<Vec<_>>().join(", ")))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (exposed, missing);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        missing.is_empty(),
        "{} metric(s) referenced by deploy/ are not in the /metrics of any node or gateway:\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
    // And the check can fail: a name nothing exposes is reported.
    assert!(!exposed.covers("playground_no_such_metric_total"));
    assert!(!exposed.covers("playground_http_requests_total_bucket"), "a counter has no buckets");
    println!("{} metric names referenced by deploy/, all exposed", referenced.len());
}

#[test]
fn names_are_extracted_whole() {
    let text = r#"expr: sum(rate(playground_http_requests_total{status=~"5.."}[5m])) / my_playground_x
        "expr": "histogram_quantile(0.99, rate(playground_raft_commit_duration_seconds_bucket[1m]))"
        job: playground-nodes, group: playground.api"#;
    let names: Vec<String> = metric_names(text).into_iter().collect();
    assert_eq!(names, ["playground_http_requests_total", "playground_raft_commit_duration_seconds_bucket"]);

    let mut e = Exposed::default();
    e.add("# TYPE playground_a_seconds histogram\nplayground_a_seconds_bucket{le=\"1\"} 1\nplayground_a_seconds_sum 0.5\nplayground_a_seconds_count 1\n# TYPE playground_b_total counter\nplayground_b_total 3\n");
    assert!(e.covers("playground_a_seconds_bucket") && e.covers("playground_a_seconds_count"));
    assert!(e.covers("playground_b_total"));
    assert!(!e.covers("playground_b_total_count") && !e.covers("playground_c_total"));
}
