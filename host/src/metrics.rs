//! What the server counts, served at `/metrics` in the OpenMetrics text format
//! (which Prometheus scrapes natively).
//!
//! Labels are bounded sets: protocol names from the routing table, HTTP methods,
//! status codes, store operations and error kinds. Keys, paths and tokens never
//! become labels, so a client cannot grow the series count (or read another's keys).

use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub protocol: &'static str,
    pub method: Method,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

/// An HTTP method as a label: the standard ones by name, anything else `other`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Method(&'static str);

impl Method {
    pub fn as_str(&self) -> &'static str {
        self.0
    }

    pub fn of(method: &http::Method) -> Method {
        const KNOWN: [&str; 12] = [
            "GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "PROPFIND", "MKCOL",
            "MOVE", "COPY", "TRACE",
        ];
        Method(
            KNOWN
                .iter()
                .find(|known| method.as_str() == **known)
                .copied()
                .unwrap_or("other"),
        )
    }
}

impl prometheus_client::encoding::EncodeLabelValue for Method {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets from 100 µs to about 100 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 11))
}

/// Everything the server counts; one per [`crate::Runtime`].
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<ProtocolLabels>,
    lookups: Family<LookupLabels, Counter>,
    bytes_received: Counter,
    bytes_sent: Counter,
    store_seconds: Histograms<OperationLabels>,
    errors: Family<ErrorLabels, Counter>,
    in_flight: Gauge,
    queued: Gauge,
    connections: Gauge,
    instance_seconds: Histogram,
    memory_grows: Counter,
    started: Instant,
    uptime: Gauge<f64, std::sync::atomic::AtomicU64>,
    store_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("blobcache");
        let requests = Family::default();
        registry.register(
            "requests",
            "Requests answered, by protocol, method and status",
            requests.clone(),
        );
        let request_seconds: Histograms<ProtocolLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "request_duration",
            "Time from the request's arrival to its response head, by protocol",
            Unit::Seconds,
            request_seconds.clone(),
        );
        let lookups = Family::default();
        registry.register(
            "lookups",
            "Store lookups (head and open) by result: hit or miss",
            lookups.clone(),
        );
        let bytes_received = Counter::default();
        registry.register_with_unit(
            "received",
            "Request body bytes read from clients",
            Unit::Bytes,
            bytes_received.clone(),
        );
        let bytes_sent = Counter::default();
        registry.register_with_unit(
            "sent",
            "Response body bytes handed to client connections",
            Unit::Bytes,
            bytes_sent.clone(),
        );
        let store_seconds: Histograms<OperationLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "store_call_duration",
            "Latency of store calls, by operation",
            Unit::Seconds,
            store_seconds.clone(),
        );
        let errors = Family::default();
        registry.register(
            "errors",
            "Failures by kind: store errors, component failures, stopped and refused requests",
            errors.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Requests holding a slot (running a component instance)",
            in_flight.clone(),
        );
        let queued = Gauge::default();
        registry.register(
            "requests_queued",
            "Requests waiting for a free slot",
            queued.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open",
            connections.clone(),
        );
        let instance_seconds = latency_histogram();
        registry.register_with_unit(
            "instance_duration",
            "Lifetime of a request's component instance, instantiation to exit",
            Unit::Seconds,
            instance_seconds.clone(),
        );
        let memory_grows = Counter::default();
        registry.register(
            "guest_memory_grows",
            "Times a request's instance grew its linear memory beyond its initial size",
            memory_grows.clone(),
        );
        let uptime = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "uptime",
            "Time since the server started",
            Unit::Seconds,
            uptime.clone(),
        );
        let store_bytes = Gauge::default();
        registry.register_with_unit(
            "store_size",
            "Bytes the store holds, where it counts them (dir with --max-size, memory)",
            Unit::Bytes,
            store_bytes.clone(),
        );
        Metrics {
            store_bytes,
            registry,
            requests,
            request_seconds,
            lookups,
            bytes_received,
            bytes_sent,
            store_seconds,
            errors,
            in_flight,
            queued,
            connections,
            instance_seconds,
            memory_grows,
            started: Instant::now(),
            uptime,
        }
    }

    /// The exposition text, `# EOF` included; `store_bytes` is what the store
    /// holds, if it knows.
    pub fn render(&self, store_bytes: Option<u64>) -> String {
        self.uptime.set(self.started.elapsed().as_secs_f64());
        self.store_bytes.set(store_bytes.unwrap_or(0) as i64);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    pub fn request(&self, labels: RequestLabels, elapsed: Duration) {
        let protocol = labels.protocol;
        self.requests.get_or_create(&labels).inc();
        self.request_seconds
            .get_or_create(&ProtocolLabels { protocol })
            .observe(elapsed.as_secs_f64());
    }

    pub fn lookup(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.lookups.get_or_create(&LookupLabels { result }).inc();
    }

    pub fn received(&self, bytes: usize) {
        self.bytes_received.inc_by(bytes as u64);
    }

    pub fn sent(&self, bytes: usize) {
        self.bytes_sent.inc_by(bytes as u64);
    }

    pub fn store_call(&self, operation: &'static str, elapsed: Duration) {
        self.store_seconds
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    /// One failure of `kind` (a short, fixed name such as `store_unavailable`).
    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&ErrorLabels { kind }).inc();
    }

    /// One instance ended after `lifetime`, having grown its memory `grows` times.
    pub fn instance(&self, lifetime: Duration, grows: u64) {
        self.instance_seconds.observe(lifetime.as_secs_f64());
        if grows > 0 {
            self.memory_grows.inc_by(grows);
        }
    }

    /// Counts one request in flight until the guard drops.
    pub fn in_flight(&self) -> GaugeGuard {
        GaugeGuard::new(&self.in_flight)
    }

    /// Counts one request waiting for a slot until the guard drops.
    pub fn queued(&self) -> GaugeGuard {
        GaugeGuard::new(&self.queued)
    }

    /// Counts one open connection until the guard drops.
    pub fn connection(&self) -> GaugeGuard {
        GaugeGuard::new(&self.connections)
    }
}

/// Decrements its gauge when dropped.
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: &Gauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counted_traffic() {
        let metrics = Metrics::new();
        let labels = RequestLabels {
            protocol: "bazel",
            method: Method::of(&http::Method::GET),
            status: 200,
        };
        metrics.request(labels.clone(), Duration::from_millis(3));
        metrics.request(labels, Duration::from_millis(5));
        metrics.lookup(true);
        metrics.lookup(false);
        metrics.sent(1024);
        metrics.error("store_unavailable");
        let text = metrics.render(Some(7));
        assert!(
            text.contains(
                "blobcache_requests_total{protocol=\"bazel\",method=\"GET\",status=\"200\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("blobcache_lookups_total{result=\"hit\"} 1"));
        assert!(text.contains("blobcache_sent_bytes_total 1024"));
        assert!(text.contains("blobcache_errors_total{kind=\"store_unavailable\"} 1"));
        assert!(text.contains("blobcache_request_duration_seconds_count{protocol=\"bazel\"} 2"));
        assert!(text.ends_with("# EOF\n"));
        let weird = Method::of(&http::Method::from_bytes(b"BREW").unwrap());
        assert_eq!(weird, Method("other"));
    }
}
