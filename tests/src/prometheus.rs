//! A real Prometheus (and promtool) for the metrics tests, built from the
//! Go module proxy by tools/prometheus/build.sh (cached outside the clone):
//! a server on loopback with a config and rule files of the test's making,
//! queried through its HTTP API, killed by PID with its data directory
//! removed when dropped; and `promtool check metrics` / `test rules`.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::{Guarded, free_addr};

/// The directory holding the pinned `prometheus` and `promtool`, built (or
/// found up to date) once per process. A failed build fails the test.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| crate::built_tools::bin_dir("prometheus", &["prometheus", "promtool"]))
}

/// The pinned promtool.
pub fn promtool() -> PathBuf {
    bin_dir().join("promtool")
}

/// `promtool check metrics` on a page in the classic text format (what
/// `curl /metrics` gets): `Err` with promtool's complaints.
pub fn check_metrics(page: &str) -> Result<(), String> {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool().display()));
    let mut stdin = child.stdin.take().expect("promtool's stdin is piped");
    stdin.write_all(page.as_bytes()).expect("write the page to promtool");
    drop(stdin);
    let output = child.wait_with_output().expect("wait for promtool");
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "promtool check metrics ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// One series of an instant-vector answer: its labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Every label, `__name__` included when the result has one.
    pub labels: BTreeMap<String, String>,
    /// The value (NaN and ±Inf as Prometheus writes them).
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, or "" (Prometheus's absent label).
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// An alert as `/api/v1/alerts` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// Its labels (`alertname` included).
    pub labels: BTreeMap<String, String>,
    /// `pending` or `firing`.
    pub state: String,
}

/// A running Prometheus on loopback. Dropping it kills it (SIGKILL by PID)
/// and removes its config and data directory.
#[derive(Debug)]
pub struct Prometheus {
    process: Guarded,
    /// Its API address.
    pub addr: SocketAddr,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus with `config` (prometheus.yml) and `files`
    /// (name, contents) written next to it, e.g. the rule files the config
    /// names; waits until it is ready.
    pub fn start(config: &str, files: &[(&str, &str)]) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("vpblu-prometheus-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create Prometheus's directory: {e}"));
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        };
        write("prometheus.yml", config);
        for (name, text) in files {
            write(name, text);
        }
        let addr = free_addr();
        let log = dir.path().join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let binary = bin_dir().join("prometheus");
        let child = Command::new(&binary)
            .current_dir(dir.path())
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup the log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut prometheus = Prometheus { process: Guarded::new(child), addr, log, dir };
        prometheus.wait_ready(Duration::from_secs(30));
        prometheus
    }

    fn wait_ready(&mut self, within: Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.process.wait_timeout(Duration::ZERO) {
                panic!("Prometheus exited ({status}) before it was ready; its log:\n{}", self.log_text());
            }
            if get(self.addr, "/-/ready").is_some_and(|(code, _)| code == 200) {
                return;
            }
            assert!(
                start.elapsed() < within,
                "Prometheus was not ready within {within:?}; its log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its directory (config, rule files, data, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Evaluates `promql` now; panics on an API error (a bad query is a
    /// bug in the test or in a shipped rule or panel).
    pub fn query(&self, promql: &str) -> Vec<Sample> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(promql)));
        let result = &data["result"];
        match data["resultType"].as_str() {
            Some("vector") => result
                .as_array()
                .into_iter()
                .flatten()
                .map(|series| Sample {
                    labels: labels(&series["metric"]),
                    value: number(&series["value"][1]),
                })
                .collect(),
            Some("scalar") => vec![Sample { labels: BTreeMap::new(), value: number(&result[1]) }],
            other => panic!("{promql}: expected an instant vector or a scalar, got {other:?}: {data}"),
        }
    }

    /// Evaluates `promql` over the last `range` at `step`; how many
    /// series had at least one point.
    pub fn query_range_series(&self, promql: &str, range: Duration, step: Duration) -> usize {
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is past 1970")
            .as_secs_f64();
        let path = format!(
            "/api/v1/query_range?query={}&start={:.3}&end={end:.3}&step={:.3}",
            encode(promql),
            end - range.as_secs_f64(),
            step.as_secs_f64()
        );
        let data = self.api(&path);
        data["result"].as_array().map_or(0, |series| {
            series.iter().filter(|s| s["values"].as_array().is_some_and(|v| !v.is_empty())).count()
        })
    }

    /// Polls `promql` until `done` accepts its answer; panics after
    /// `within` with the last answer and `what`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        promql: &str,
        within: Duration,
        done: impl Fn(&[Sample]) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            let answer = self.query(promql);
            if let Some(out) = done(&answer) {
                return out;
            }
            assert!(
                start.elapsed() < within,
                "{what}: `{promql}` did not get there within {within:?}; it answers:\n{answer:#?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Every alert that is pending or firing.
    pub fn alerts(&self) -> Vec<Alert> {
        let data = self.api("/api/v1/alerts");
        data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|alert| Alert {
                labels: labels(&alert["labels"]),
                state: alert["state"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }

    /// The scrape targets as (job, instance, health, last error).
    pub fn targets(&self) -> Vec<(String, String, String, String)> {
        let data = self.api("/api/v1/targets?state=active");
        data["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                (s(&t["labels"]["job"]), s(&t["labels"]["instance"]), s(&t["health"]), s(&t["lastError"]))
            })
            .collect()
    }

    /// `GET path` on the API; the `data` of a successful answer.
    fn api(&self, path: &str) -> Value {
        let (code, body) = get(self.addr, path)
            .unwrap_or_else(|| panic!("Prometheus did not answer GET {path}; its log:\n{}", self.log_text()));
        let answer: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path}: {code}, not JSON ({e}): {body}"));
        assert!(code == 200 && answer["status"] == "success", "GET {path}: {code} {answer}");
        answer["data"].clone()
    }
}

/// An HTTP/1.0 GET (so the answer is never chunked): status and body.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn labels(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

fn number(value: &Value) -> f64 {
    let text = value.as_str().unwrap_or_else(|| panic!("a sample value is a string: {value}"));
    text.parse().unwrap_or_else(|e| panic!("a sample value {text:?}: {e}"))
}

/// Runs `promtool test rules` on `tests` (a file whose `rule_files` are
/// relative to it); `Err` with promtool's output on failure.
pub fn test_rules(tests: &Path) -> Result<String, String> {
    run_promtool(&["test", "rules"], tests)
}

/// Runs `promtool check rules` on `rules`; `Err` with its output.
pub fn check_rules(rules: &Path) -> Result<String, String> {
    run_promtool(&["check", "rules"], rules)
}

fn run_promtool(command: &[&str], file: &Path) -> Result<String, String> {
    let output = Command::new(promtool())
        .args(command)
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool().display()));
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.success() {
        Ok(text)
    } else {
        Err(format!("promtool {} {} ({}):\n{text}", command.join(" "), file.display(), output.status))
    }
}
