//! A [`Snapshot`] as the HTTP side serves it: Prometheus text for `/metrics`, JSON for
//! `/status`. Pure functions of the snapshot, run on the HTTP thread, never on the broker's.
//!
//! # What is listed, and how far
//!
//! Both listings take the services in name order and stop at a cap, so that a broker with
//! 100,000 services answers a scrape or a page refresh in bounded time and size:
//!
//! - `/metrics` has one set of series per service for the first [`METRICS_MAX_SERVICES`] names,
//!   and, for all services, the totals (`..._services`, `..._requests_waiting`,
//!   `..._workers{state}`) and how many were listed (`..._services_listed`). Thousands of label
//!   values are more than Prometheus should be asked to keep anyway.
//! - `/status` lists at most [`STATUS_MAX_SERVICES`] services a page: `?offset=N` starts at the
//!   N-th name, `?limit=M` asks for fewer; the answer says `services_total` and, if there are
//!   more, `next_offset`. `?service=NAME` lists that one service alone.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::snapshot::{BrokerCounters, ServiceSnapshot, Snapshot};

/// The most services `/metrics` gives series of their own (see the [module docs](self)).
pub const METRICS_MAX_SERVICES: usize = 1000;

/// The most services one `/status` page lists (see the [module docs](self)).
pub const STATUS_MAX_SERVICES: usize = 100;

/// The content type of [`prometheus`]'s text (the Prometheus text format, version 0.0.4).
pub const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The services in name order.
fn by_name(snapshot: &Snapshot) -> Vec<&Arc<ServiceSnapshot>> {
    let mut services: Vec<&Arc<ServiceSnapshot>> = snapshot.services.iter().collect();
    services.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    services
}

/// Sums over every service, for the totals both listings show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Requests waiting, in every service.
    pub requests_waiting: u64,
    /// Idle workers, in every service.
    pub workers_idle: u64,
    /// Busy workers, in every service.
    pub workers_busy: u64,
}

impl Totals {
    fn of(snapshot: &Snapshot) -> Totals {
        snapshot
            .services
            .iter()
            .fold(Totals::default(), |totals, service| Totals {
                requests_waiting: totals.requests_waiting + service.requests_waiting,
                workers_idle: totals.workers_idle + service.workers_idle,
                workers_busy: totals.workers_busy + service.workers_busy,
            })
    }
}

/// The snapshot in the Prometheus text format. Metric names start with the program's name
/// (`lbbroker_...`, `broker_...`).
pub fn prometheus(snapshot: &Arc<Snapshot>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector {
        snapshot: Arc::clone(snapshot),
    }));
    let mut text = String::new();
    // Writing into a String cannot fail, and every name and label here is valid; an error would
    // be a bug in this module, shown to the scraper rather than panicking the HTTP thread.
    if let Err(error) = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
        text.push_str(&format!("# encoding failed: {error}\n"));
    }
    text
}

/// Hands a snapshot to prometheus-client's encoder, which asks for it on every scrape.
#[derive(Debug)]
struct SnapshotCollector {
    snapshot: Arc<Snapshot>,
}

/// One metric with one value per service, labelled `service`.
fn per_service<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    services: &[&Arc<ServiceSnapshot>],
    name: &str,
    help: &str,
    metric_type: MetricType,
    value: impl Fn(&ServiceSnapshot) -> M,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for service in services {
        let labels = [("service", service.name.as_str())];
        value(service).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// A program name as a metric-name prefix: letters, digits and `_` only.
fn prefix(program: &str) -> String {
    let cleaned: String = program
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if cleaned.is_empty() || cleaned.starts_with(|c: char| c.is_ascii_digit()) {
        format!("broker_{cleaned}")
    } else {
        cleaned
    }
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = &self.snapshot;
        let p = prefix(&snapshot.program);
        let name = |metric: &str| format!("{p}_{metric}");
        let BrokerCounters {
            workers_registered,
            workers_purged,
            workers_disconnected,
            connections,
            messages_in,
            messages_out,
            malformed,
        } = snapshot.counters;
        let e = &mut encoder;
        counter(
            e,
            &name("workers_registered"),
            "Workers that said READY for the first time.",
            workers_registered,
        )?;
        counter(
            e,
            &name("workers_purged"),
            "Workers dropped for missing heartbeats.",
            workers_purged,
        )?;
        counter(
            e,
            &name("workers_disconnected"),
            "Workers that left or were disconnected.",
            workers_disconnected,
        )?;
        if let Some(connections) = connections {
            gauge(
                e,
                &name("connections"),
                "Connections open now.",
                connections,
            )?;
        }
        counter(
            e,
            &name("messages_in"),
            "Messages received, every socket.",
            messages_in,
        )?;
        counter(
            e,
            &name("messages_out"),
            "Messages sent, every socket.",
            messages_out,
        )?;
        counter(
            e,
            &name("malformed_messages"),
            "Messages dropped for breaking the protocol.",
            malformed,
        )?;

        let totals = Totals::of(snapshot);
        let services = by_name(snapshot);
        let listed = &services[..services.len().min(METRICS_MAX_SERVICES)];
        gauge(
            e,
            &name("services"),
            "Services the broker knows.",
            services.len() as u64,
        )?;
        gauge(
            e,
            &name("services_listed"),
            "Services with series of their own here (the first by name, up to a cap).",
            listed.len() as u64,
        )?;
        gauge(
            e,
            &name("requests_waiting"),
            "Requests waiting for a worker, every service.",
            totals.requests_waiting,
        )?;
        {
            let name_workers = name("workers");
            let mut workers = e.encode_descriptor(
                &name_workers,
                "Workers by state, every service.",
                None,
                MetricType::Gauge,
            )?;
            for (state, count) in [("idle", totals.workers_idle), ("busy", totals.workers_busy)] {
                ConstGauge::new(count).encode(workers.encode_family(&[("state", state)])?)?;
            }
        }

        let gauge_of = |value: u64| ConstGauge::new(value);
        let counter_of = |value: u64| ConstCounter::new(value);
        per_service(
            e,
            listed,
            &name("service_requests_waiting"),
            "Requests waiting for a worker.",
            MetricType::Gauge,
            |s| gauge_of(s.requests_waiting),
        )?;
        {
            let name_service_workers = name("service_workers");
            let mut workers = e.encode_descriptor(
                &name_service_workers,
                "Workers by state.",
                None,
                MetricType::Gauge,
            )?;
            for service in listed {
                for (state, count) in [
                    ("idle", service.workers_idle),
                    ("busy", service.workers_busy),
                ] {
                    let labels = [("service", service.name.as_str()), ("state", state)];
                    ConstGauge::new(count).encode(workers.encode_family(&labels)?)?;
                }
            }
        }
        per_service(
            e,
            listed,
            &name("service_requests_received"),
            "Requests received from clients.",
            MetricType::Counter,
            |s| counter_of(s.counters.received),
        )?;
        per_service(
            e,
            listed,
            &name("service_requests_dispatched"),
            "Requests sent to a worker.",
            MetricType::Counter,
            |s| counter_of(s.counters.dispatched),
        )?;
        per_service(
            e,
            listed,
            &name("service_requests_answered"),
            "Replies sent to a client.",
            MetricType::Counter,
            |s| counter_of(s.counters.answered),
        )?;
        {
            let name_service_requests_refused = name("service_requests_refused");
            let mut refused = e.encode_descriptor(
                &name_service_requests_refused,
                "Requests refused, by reason.",
                None,
                MetricType::Counter,
            )?;
            for service in listed {
                for (reason, count) in &service.counters.refused {
                    let labels = [
                        ("service", service.name.as_str()),
                        ("reason", reason.as_str()),
                    ];
                    ConstCounter::new(*count).encode(refused.encode_family(&labels)?)?;
                }
            }
        }
        per_service(
            e,
            listed,
            &name("service_requests_expired"),
            "Requests dropped after waiting longer than their time to live.",
            MetricType::Counter,
            |s| counter_of(s.counters.expired),
        )?;
        per_service(
            e,
            listed,
            &name("service_requests_lost_with_worker"),
            "Requests lost with the worker that had them.",
            MetricType::Counter,
            |s| counter_of(s.counters.lost_with_worker),
        )?;
        per_service(
            e,
            listed,
            &name("service_replies_dropped"),
            "Replies that could not be delivered to their client.",
            MetricType::Counter,
            |s| counter_of(s.counters.replies_dropped),
        )?;
        {
            let name_service_latency_seconds = name("service_latency_seconds");
            let mut latency = e.encode_descriptor(
                &name_service_latency_seconds,
                "From request in to reply out, in the broker.",
                None,
                MetricType::Histogram,
            )?;
            for service in listed {
                let histogram = &service.latency;
                let buckets: Vec<(f64, u64)> = histogram.buckets().collect();
                let labels = [("service", service.name.as_str())];
                latency
                    .encode_family(&labels)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        histogram.sum_seconds,
                        histogram.count,
                        &buckets,
                        None,
                    )?;
            }
        }
        Ok(())
    }
}

/// Which services a `/status` request asks for: `?offset=N&limit=M` or `?service=NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusQuery {
    /// Skip this many services, in name order.
    pub offset: usize,
    /// List at most this many (never more than [`STATUS_MAX_SERVICES`]).
    pub limit: usize,
    /// List only the service of this name.
    pub service: Option<String>,
}

impl Default for StatusQuery {
    fn default() -> Self {
        StatusQuery {
            offset: 0,
            limit: STATUS_MAX_SERVICES,
            service: None,
        }
    }
}

impl StatusQuery {
    /// Reads the query string of a URL (`/status?offset=100`). Unknown or unreadable parameters
    /// are ignored: a status page is best effort, and the answer says what it listed.
    pub fn from_url(url: &str) -> StatusQuery {
        let mut query = StatusQuery::default();
        let Some((_, parameters)) = url.split_once('?') else {
            return query;
        };
        for parameter in parameters.split('&') {
            let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            match key {
                "offset" => query.offset = value.parse().unwrap_or(0),
                "limit" => {
                    query.limit = value
                        .parse()
                        .unwrap_or(STATUS_MAX_SERVICES)
                        .min(STATUS_MAX_SERVICES)
                }
                "service" => query.service = Some(percent_decode(value)),
                _ => {}
            }
        }
        query
    }
}

/// `%41` as `A` and `+` as a space; a malformed escape is kept as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => decoded.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                {
                    Some(byte) => {
                        decoded.push(byte);
                        i += 2;
                    }
                    None => decoded.push(b'%'),
                }
            }
            byte => decoded.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The `/status` answer.
#[derive(Debug, Serialize)]
struct Status<'a> {
    program: &'a str,
    sequence: u64,
    uptime_ms: u64,
    counters: BrokerCounters,
    totals: Totals,
    services_total: usize,
    offset: usize,
    limit: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_offset: Option<usize>,
    services: Vec<&'a ServiceSnapshot>,
}

/// The snapshot as `/status` JSON, the services `query` asks for.
pub fn status_json(snapshot: &Snapshot, query: &StatusQuery) -> String {
    let services = by_name(snapshot);
    let (listed, next_offset): (Vec<&ServiceSnapshot>, Option<usize>) = match &query.service {
        Some(name) => (
            services
                .iter()
                .filter(|service| service.name == *name)
                .map(|service| service.as_ref())
                .collect(),
            None,
        ),
        None => {
            let start = query.offset.min(services.len());
            let end = start.saturating_add(query.limit).min(services.len());
            (
                services[start..end].iter().map(|s| s.as_ref()).collect(),
                (end < services.len()).then_some(end),
            )
        }
    };
    let status = Status {
        program: &snapshot.program,
        sequence: snapshot.sequence,
        uptime_ms: snapshot.uptime_ms,
        counters: snapshot.counters,
        totals: Totals::of(snapshot),
        services_total: services.len(),
        offset: query.offset,
        limit: query.limit,
        next_offset,
        services: listed,
    };
    serde_json::to_string(&status)
        .unwrap_or_else(|error| format!("{{\"error\":\"cannot encode the status: {error}\"}}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use serde_json::Value;

    use super::*;
    use crate::snapshot::ServiceCounters;

    /// lbbroker's shape: one queue, two processors idle in LRU order, one busy.
    fn one_queue() -> Arc<Snapshot> {
        let mut queue = ServiceSnapshot::named("processors");
        queue.requests_waiting = 1;
        queue.set_idle(2, ["PROCESSOR-2".to_owned(), "PROCESSOR-0".to_owned()]);
        queue.set_busy(1, ["PROCESSOR-1".to_owned()]);
        queue.counters = ServiceCounters {
            received: 4,
            dispatched: 3,
            answered: 3,
            ..ServiceCounters::default()
        };
        queue.latency.observe(Duration::from_micros(700));
        queue.latency.observe(Duration::from_micros(800));
        queue.latency.observe(Duration::from_millis(30));
        Arc::new(Snapshot {
            program: "lbbroker".to_owned(),
            sequence: 9,
            uptime_ms: 1500,
            counters: BrokerCounters {
                workers_registered: 3,
                messages_in: 10,
                messages_out: 6,
                ..BrokerCounters::default()
            },
            services: vec![Arc::new(queue)].into(),
        })
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn metrics_carry_every_counter_of_the_broker_and_its_queue() {
        let text = prometheus(&one_queue());
        let lines = lines(&text);
        for expected in [
            "# TYPE lbbroker_workers_registered_total counter",
            "lbbroker_workers_registered_total 3",
            "lbbroker_workers_purged_total 0",
            "lbbroker_messages_in_total 10",
            "lbbroker_messages_out_total 6",
            "lbbroker_malformed_messages_total 0",
            "lbbroker_services 1",
            "lbbroker_requests_waiting 1",
            "lbbroker_workers{state=\"idle\"} 2",
            "lbbroker_workers{state=\"busy\"} 1",
            "lbbroker_service_requests_waiting{service=\"processors\"} 1",
            "lbbroker_service_workers{service=\"processors\",state=\"idle\"} 2",
            "lbbroker_service_workers{service=\"processors\",state=\"busy\"} 1",
            "lbbroker_service_requests_received_total{service=\"processors\"} 4",
            "lbbroker_service_requests_dispatched_total{service=\"processors\"} 3",
            "lbbroker_service_requests_answered_total{service=\"processors\"} 3",
            "lbbroker_service_requests_lost_with_worker_total{service=\"processors\"} 0",
            "# TYPE lbbroker_service_latency_seconds histogram",
            // Cumulative buckets: 0 up to 0.5 ms, both sub-ms ones by 1 ms, all three by 50 ms.
            "lbbroker_service_latency_seconds_bucket{service=\"processors\",le=\"0.0005\"} 0",
            "lbbroker_service_latency_seconds_bucket{service=\"processors\",le=\"0.001\"} 2",
            "lbbroker_service_latency_seconds_bucket{service=\"processors\",le=\"0.025\"} 2",
            "lbbroker_service_latency_seconds_bucket{service=\"processors\",le=\"0.05\"} 3",
            "lbbroker_service_latency_seconds_bucket{service=\"processors\",le=\"+Inf\"} 3",
            "lbbroker_service_latency_seconds_count{service=\"processors\"} 3",
        ] {
            assert!(lines.contains(&expected), "{expected:?} not in:\n{text}");
        }
        assert!(
            !text.contains("connections"),
            "lbbroker does not track connections, so there is no such series:\n{text}"
        );
        assert!(
            !text.contains("# EOF"),
            "the Prometheus format, not OpenMetrics"
        );
    }

    #[test]
    fn connections_and_refusals_show_where_the_broker_has_them() {
        let mut snapshot = (*one_queue()).clone();
        snapshot.program = "broker".to_owned();
        snapshot.counters.connections = Some(12);
        let mut echo = ServiceSnapshot::named("echo");
        echo.counters.refused.insert("queue_full".to_owned(), 5);
        snapshot.services = snapshot
            .services
            .iter()
            .cloned()
            .chain([Arc::new(echo)])
            .collect();
        let text = prometheus(&Arc::new(snapshot));
        let lines = lines(&text);
        assert!(lines.contains(&"broker_connections 12"), "{text}");
        assert!(
            lines.contains(
                &"broker_service_requests_refused_total{service=\"echo\",reason=\"queue_full\"} 5"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_name_from_a_peer_cannot_break_the_metrics_or_the_json() {
        let mut snapshot = (*one_queue()).clone();
        let hostile = "a\"b\\c\nd</script>";
        snapshot.services = vec![Arc::new(ServiceSnapshot::named(hostile))].into();
        let text = prometheus(&Arc::new(snapshot.clone()));
        assert!(
            text.contains("service=\"a\\\"b\\\\c\\nd</script>\""),
            "escaped label value:\n{text}"
        );
        let status: Value =
            serde_json::from_str(&status_json(&snapshot, &StatusQuery::default())).unwrap();
        assert_eq!(status["services"][0]["name"], hostile);
    }

    #[test]
    fn status_shows_the_queue_in_lru_order_with_its_counters() {
        let status: Value =
            serde_json::from_str(&status_json(&one_queue(), &StatusQuery::default())).unwrap();
        assert_eq!(status["program"], "lbbroker");
        assert_eq!(status["sequence"], 9);
        assert_eq!(status["uptime_ms"], 1500);
        assert_eq!(status["counters"]["messages_in"], 10);
        assert!(
            status["counters"].get("connections").is_none(),
            "no connections field where they are not counted: {status}"
        );
        assert_eq!(status["totals"]["workers_idle"], 2);
        assert_eq!(status["services_total"], 1);
        assert!(status.get("next_offset").is_none());
        let queue = &status["services"][0];
        assert_eq!(queue["name"], "processors");
        assert_eq!(
            queue["idle_workers"],
            serde_json::json!(["PROCESSOR-2", "PROCESSOR-0"])
        );
        assert_eq!(queue["busy_workers"], serde_json::json!(["PROCESSOR-1"]));
        assert_eq!(queue["counters"]["answered"], 3);
        assert_eq!(queue["latency"]["count"], 3);
    }

    fn many(count: usize) -> Snapshot {
        Snapshot {
            program: "broker".to_owned(),
            // Built in reverse, to show that both listings sort by name.
            services: (0..count)
                .rev()
                .map(|n| Arc::new(ServiceSnapshot::named(format!("s{n:05}"))))
                .collect(),
            ..Snapshot::default()
        }
    }

    fn names(status: &Value) -> Vec<String> {
        status["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|service| service["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn status_pages_through_the_services_in_name_order() {
        let snapshot = many(250);
        let page = |url: &str| -> Value {
            serde_json::from_str(&status_json(&snapshot, &StatusQuery::from_url(url))).unwrap()
        };
        let first = page("/status");
        assert_eq!(first["services_total"], 250);
        assert_eq!(names(&first).len(), STATUS_MAX_SERVICES);
        assert_eq!(names(&first)[0], "s00000");
        assert_eq!(first["next_offset"], 100);

        let last = page("/status?offset=200");
        assert_eq!(names(&last).len(), 50);
        assert_eq!(names(&last)[0], "s00200");
        assert!(last.get("next_offset").is_none());

        assert_eq!(
            names(&page("/status?limit=100000")).len(),
            STATUS_MAX_SERVICES,
            "a page never lists more than the cap"
        );
        assert_eq!(names(&page("/status?offset=9999")).len(), 0);
        assert_eq!(names(&page("/status?service=s00042")), ["s00042"]);
        assert_eq!(names(&page("/status?service=nothing")).len(), 0);
    }

    #[test]
    fn metrics_give_series_to_the_first_names_up_to_the_cap_and_totals_for_all() {
        let text = prometheus(&Arc::new(many(METRICS_MAX_SERVICES + 500)));
        let lines = lines(&text);
        assert!(lines.contains(&"broker_services 1500"));
        assert!(lines.contains(&"broker_services_listed 1000"));
        assert!(text.contains("service=\"s00999\""));
        assert!(!text.contains("service=\"s01000\""), "past the cap");
    }

    #[test]
    fn a_query_is_read_leniently() {
        assert_eq!(StatusQuery::from_url("/status"), StatusQuery::default());
        let query = StatusQuery::from_url("/status?offset=x&limit=5&service=mmi%2Eservice&z=1");
        assert_eq!(query.offset, 0);
        assert_eq!(query.limit, 5);
        assert_eq!(query.service.as_deref(), Some("mmi.service"));
        assert_eq!(
            StatusQuery::from_url("/status?service=a+b%zz%4")
                .service
                .as_deref(),
            Some("a b%zz%4")
        );
    }
}
