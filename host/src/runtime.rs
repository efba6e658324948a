//! Runs the cache component: one wasmtime engine, one pre-instantiated component,
//! and a fresh instance per request.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::exchange::Exchange;
pub use crate::limits::ConnectionBytes;
use crate::limits::{self, Progress};
use crate::metrics::Metrics;
use crate::store::SharedBackend;

/// The cache component, built from `component/` by this crate's build script.
pub static COMPONENT_WASM: &[u8] = include_bytes!(env!("BLOBCACHE_COMPONENT_WASM"));

/// How the component runs.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Linear memory one request's instance may grow to.
    pub guest_memory: usize,
    /// Longest a guest may execute without moving blob bytes.
    pub guest_timeout: Duration,
    /// Requests served at once; more wait for a slot.
    pub max_concurrent: u32,
    /// Requests that may wait for a slot; more are answered 503 at once.
    pub max_queued: u32,
    /// Longest a request waits for a slot before it is answered 503.
    pub queue_timeout: Duration,
    /// Bytes per second a request must move after its first `guest_timeout`
    /// (0: no minimum).
    pub min_transfer_rate: u64,
    /// Environment the component sees (its settings, such as `BLOBCACHE_MAX_BLOB_SIZE`).
    pub component_env: Vec<(String, String)>,
    /// Where compiled code is kept between runs; none compiles at every start.
    pub compile_cache: Option<PathBuf>,
    /// A component to run instead of the built-in one (tests of the host's limits).
    pub component_override: Option<PathBuf>,
}

/// The component's settings by name only: their values may be secrets (tokens).
impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let settings: Vec<&str> = self.component_env.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("RuntimeConfig")
            .field("guest_memory", &self.guest_memory)
            .field("guest_timeout", &self.guest_timeout)
            .field("max_concurrent", &self.max_concurrent)
            .field("max_queued", &self.max_queued)
            .field("queue_timeout", &self.queue_timeout)
            .field("min_transfer_rate", &self.min_transfer_rate)
            .field("component_env", &settings)
            .field("compile_cache", &self.compile_cache)
            .field("component_override", &self.component_override)
            .finish()
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            guest_memory: 64 << 20,
            guest_timeout: Duration::from_secs(30),
            max_concurrent: 256,
            max_queued: 1024,
            queue_timeout: Duration::from_secs(10),
            min_transfer_rate: 1024,
            component_env: Vec::new(),
            compile_cache: None,
            component_override: None,
        }
    }
}

/// State of one request's instance.
pub struct RequestState {
    pub(crate) table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    pub(crate) backend: SharedBackend,
    pub(crate) progress: Progress,
    progress_seen: u64,
    /// Epoch ticks the guest has run wasm without moving data.
    idle_ticks: u64,
    limits: GuestLimits,
    hooks: BodyHooks,
}

/// The instance's limits, counting how often the guest grows its memory: a
/// component whose initial memory fits a request grows it not at all.
struct GuestLimits {
    limits: StoreLimits,
    memory_grows: u64,
}

impl wasmtime::ResourceLimiter for GuestLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Instantiation asks for the initial size, from nothing.
        if current > 0 {
            self.memory_grows += 1;
        }
        self.limits.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// Outgoing bodies buffer one chunk of at most this many bytes: with the
/// store's own read chunk, this bounds what one download holds in memory
/// however slowly its client reads.
pub const RESPONSE_CHUNK: usize = 256 << 10;

/// The wasi-http settings that differ from wasmtime's defaults.
struct BodyHooks;

impl wasmtime_wasi_http::WasiHttpHooks for BodyHooks {
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        RESPONSE_CHUNK
    }
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// The engine, the pre-instantiated component and the store backend.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    pre: ProxyPre<RequestState>,
    backend: SharedBackend,
    config: RuntimeConfig,
    /// One per pooled instance.
    slots: Arc<Semaphore>,
    /// Requests with a body may hold only these, so uploads (however slow)
    /// always leave slots to reads and health checks.
    upload_slots: Arc<Semaphore>,
    waiting: std::sync::atomic::AtomicU32,
    metrics: Arc<Metrics>,
}

impl Runtime {
    pub fn new(backend: SharedBackend, config: RuntimeConfig) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let backend = crate::store::metered::Metered::wrap(backend, metrics.clone());
        let engine = new_engine(&config)?;
        let component = match &config.component_override {
            Some(path) => Component::from_file(&engine, path)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("loading component {}", path.display()))?,
            None => load_component(&engine, COMPONENT_WASM, config.compile_cache.as_deref())?,
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        use crate::bindings::blobcache::store::{store, types};
        types::add_to_linker::<_, HasSelf<RequestState>>(&mut linker, |s| s)?;
        store::add_to_linker::<_, HasSelf<RequestState>>(&mut linker, |s| s)?;
        let pre = ProxyPre::new(linker.instantiate_pre(&component)?)?;
        start_epoch_ticker(&engine);
        let slots = config.max_concurrent.max(1) as usize;
        // An eighth (at least one, when there are two) is kept for reads.
        let reserved = (slots / 8).max(1).min(slots - 1);
        let upload_slots = slots - reserved;
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                pre,
                backend,
                config,
                slots: Arc::new(Semaphore::new(slots)),
                upload_slots: Arc::new(Semaphore::new(upload_slots)),
                waiting: Default::default(),
                metrics,
            }),
        })
    }

    /// The store, as the component sees it (measured).
    pub fn backend(&self) -> &SharedBackend {
        &self.inner.backend
    }

    /// What this runtime has counted; [`Metrics::render`] gives `/metrics`.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Serves one HTTP request with a fresh instance of the component.
    ///
    /// Any hyper-compatible body works, so other servers can embed the cache.
    /// A guest that fails before answering gets a 500; the runtime keeps serving.
    pub async fn handle<B>(&self, request: hyper::Request<B>) -> hyper::Response<HyperOutgoingBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        self.handle_from(request, None).await
    }

    /// [`Runtime::handle`] for a request from `peer` (named in the access log).
    pub async fn handle_from<B>(
        &self,
        request: hyper::Request<B>,
        peer: Option<std::net::SocketAddr>,
    ) -> hyper::Response<HyperOutgoingBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let progress =
            Progress::on_connection(request.extensions().get::<ConnectionBytes>().cloned());
        let exchange = Exchange::new(
            request.method(),
            peer,
            self.inner.metrics.clone(),
            progress.clone(),
        );
        let has_body = !hyper::body::Body::is_end_stream(request.body());
        let (mut response, protocol) = match self.take_slot(has_body).await {
            None => {
                self.inner.metrics.error("overloaded");
                let mut response = text_response(
                    503,
                    "the cache is busy: every request slot is taken and the queue is full; retry shortly\n",
                );
                response
                    .headers_mut()
                    .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
                (response, "host")
            }
            Some(slot) => {
                let request = request.map(|body| exchange.count_request(body));
                match self.run_guest(request, slot, progress).await {
                    Ok(mut response) => {
                        // The component names the protocol that served the request;
                        // the host keeps it for logs and metrics rather than sending it on.
                        let protocol = match response.headers_mut().remove(PROTOCOL_HEADER) {
                            Some(name) => blobcache_component::route::TABLE
                                .iter()
                                .map(|p| p.name)
                                .find(|known| name == *known)
                                .unwrap_or("unknown"),
                            None => "none",
                        };
                        response.extensions_mut().insert(ServedBy(protocol));
                        (response, protocol)
                    }
                    Err(error) => {
                        // Only a client below the minimum rate is surely the client's
                        // doing; a request without progress may be a guest spinning.
                        let too_slow = error
                            .downcast_ref::<limits::Stopped>()
                            .filter(|stopped| matches!(stopped, limits::Stopped::TooSlow { .. }));
                        let response = match too_slow {
                            Some(stopped) => {
                                self.inner.metrics.error(stopped.kind());
                                tracing::info!("request stopped before its answer: {stopped}");
                                text_response(408, &format!("request timeout: {stopped}\n"))
                            }
                            None => {
                                let kind = error
                                    .downcast_ref::<limits::Stopped>()
                                    .map_or("component_failed", limits::Stopped::kind);
                                self.inner.metrics.error(kind);
                                tracing::error!("request failed in the cache component: {error:#}");
                                text_response(
                                    500,
                                    "internal error: the cache component failed; see the server log\n",
                                )
                            }
                        };
                        (response, "none")
                    }
                }
            }
        };
        exchange.answered(protocol, response.status().as_u16());
        let body = std::mem::take(response.body_mut());
        *response.body_mut() = exchange.count_response(body).boxed_unsync();
        response
    }

    /// A request slot (and, for a request with a body, an upload slot): at
    /// once if one is free, else after waiting in the bounded queue; none if
    /// the queue is full or the wait exceeds the queue timeout.
    async fn take_slot(&self, has_body: bool) -> Option<Slot> {
        let inner = &self.inner;
        // One deadline for both waits: an upload waits no longer than a read.
        let deadline = tokio::time::Instant::now() + inner.config.queue_timeout;
        let upload = match has_body {
            true => Some(self.acquire(&inner.upload_slots, deadline).await?),
            false => None,
        };
        let request = self.acquire(&inner.slots, deadline).await?;
        Some(Slot {
            _request: request,
            _upload: upload,
        })
    }

    async fn acquire(
        &self,
        semaphore: &Arc<Semaphore>,
        deadline: tokio::time::Instant,
    ) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = semaphore.clone().try_acquire_owned() {
            return Some(permit);
        }
        let inner = &self.inner;
        // Counted out by a guard: hyper drops this future when its client hangs
        // up, and a count that leaked would close the queue for good.
        let _waiting = Waiting::enter(&inner.waiting, inner.config.max_queued)?;
        let _queued = inner.metrics.queued();
        let permit = tokio::time::timeout_at(deadline, semaphore.clone().acquire_owned()).await;
        permit.ok()?.ok()
    }

    async fn run_guest<B>(
        &self,
        request: hyper::Request<B>,
        slot: Slot,
        progress: Progress,
    ) -> anyhow::Result<hyper::Response<HyperOutgoingBody>>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let inner = &self.inner;
        let mut store = Store::new(&inner.engine, self.request_state(progress.clone()));
        store.limiter(|state| &mut state.limits);
        // A guest running wasm yields at every epoch tick: its thread's event
        // loop serves other connections too, and must not wait for a guest
        // that spins until its time limit. It is stopped after a whole time
        // limit of ticks without moving data.
        let ticks = limits::ticks(inner.config.guest_timeout);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut context| {
            let state = context.data_mut();
            let now = state.progress.bytes();
            if now > state.progress_seen {
                state.progress_seen = now;
                state.idle_ticks = 0;
            } else {
                state.idle_ticks += 1;
                if state.idle_ticks >= ticks {
                    wasmtime::bail!(
                        "the request exceeded the guest time limit without moving data"
                    );
                }
            }
            // tokio's own yield lets the event loop poll for I/O and timers
            // before the guest runs again.
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });

        let (sender, receiver) = tokio::sync::oneshot::channel();
        let mut request = request;
        // wasi:http needs an authority; HTTP/1.0 clients may send no Host.
        if request.uri().authority().is_none()
            && !request.headers().contains_key(hyper::header::HOST)
        {
            request.headers_mut().insert(
                hyper::header::HOST,
                hyper::header::HeaderValue::from_static("localhost"),
            );
        }
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = inner.pre.clone();
        let limit = inner.config.guest_timeout;
        let min_rate = inner.config.min_transfer_rate;
        let metrics = inner.metrics.clone();
        let guest = async move {
            let _slot = slot;
            let _in_flight = metrics.in_flight();
            let started = std::time::Instant::now();
            // Declared after the slot, so dropped before it: the pooled instance is
            // free again by the time the next request may take the slot.
            let mut store = store;
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, request, out)
                    .await
            };
            let result = limits::watchdog(run, progress, limit, min_rate).await;
            metrics.instance(started.elapsed(), store.data().limits.memory_grows);
            result
        };
        // The guest runs here, in the connection's task, until it answers. A small
        // request ends within that stretch, its body already in the channel, and
        // costs no task, no timer and no wake-up of another thread. A guest still
        // streaming its body goes on in a task of its own, which (unlike the body,
        // that hyper polls only while the client reads) the watchdog keeps
        // running, so a stalled client cannot hold the slot.
        let mut guest = Some(Box::pin(guest));
        let mut receiver = receiver;
        let first = std::future::poll_fn(|cx| {
            let running = guest.as_mut().expect("polled until it ends");
            let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                running.as_mut().poll(cx)
            }));
            match polled {
                Ok(Poll::Ready(result)) => return Poll::Ready(FirstStretch::Ended(result)),
                Ok(Poll::Pending) => {}
                Err(panic) => return Poll::Ready(FirstStretch::Panicked(panic)),
            }
            Pin::new(&mut receiver)
                .poll(cx)
                .map(|answer| FirstStretch::Answered(answer.map_err(|_| ())))
        })
        .await;
        let (answer, ended) = match first {
            FirstStretch::Answered(answer) => (answer, None),
            FirstStretch::Ended(result) => (receiver.try_recv().map_err(|_| ()), Some(result)),
            FirstStretch::Panicked(panic) => {
                // A panicked future must not be polled again.
                drop(guest.take());
                let reason = panic_message(&panic);
                anyhow::bail!("the request's host code panicked: {reason}");
            }
        };
        match (answer, ended) {
            (Ok(Ok(response)), None) => {
                let metrics = inner.metrics.clone();
                let guest = guest.take().expect("still running");
                tokio::spawn(async move {
                    report_streaming_failure(&metrics, guest.await);
                });
                Ok(response)
            }
            (Ok(Ok(response)), Some(result)) => {
                report_streaming_failure(&inner.metrics, result);
                Ok(response)
            }
            (Ok(Err(code)), ended) => {
                if ended.is_none() {
                    // Let it end as it would have, on its own.
                    let guest = guest.take().expect("still running");
                    tokio::spawn(async move { drop(guest.await) });
                }
                anyhow::bail!("the component answered with error {code:?}")
            }
            (Err(()), ended) => {
                let result = match ended {
                    Some(result) => result,
                    None => guest.take().expect("still running").await,
                };
                match result {
                    Ok(()) => anyhow::bail!("the component returned without answering"),
                    Err(error) => match error.downcast::<limits::Stopped>() {
                        Ok(stopped) => Err(stopped.into()),
                        Err(error) => Err(anyhow::anyhow!("{error:?}")),
                    },
                }
            }
        }
    }

    fn request_state(&self, progress: Progress) -> RequestState {
        let config = &self.inner.config;
        let wasi = WasiCtx::builder()
            .inherit_stderr()
            .envs(&config.component_env)
            .build();
        RequestState {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            backend: self.inner.backend.clone(),
            progress,
            progress_seen: 0,
            idle_ticks: 0,
            limits: GuestLimits {
                limits: StoreLimitsBuilder::new()
                    .memory_size(config.guest_memory)
                    .instances(32)
                    .build(),
                memory_grows: 0,
            },
            hooks: BodyHooks,
        }
    }
}

/// How the first stretch of a guest's run, up to its answer, ended.
enum FirstStretch {
    /// The response head (or the error code the guest answered with); the
    /// guest may still be running.
    Answered(Result<Result<hyper::Response<HyperOutgoingBody>, ErrorCode>, ()>),
    /// The guest returned (or was stopped); its answer, if any, is in the channel.
    Ended(wasmtime::Result<()>),
    Panicked(Box<dyn std::any::Any + Send>),
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text
    } else {
        "(no message)"
    }
}

/// Counts and logs a guest that failed after it sent its answer.
fn report_streaming_failure(metrics: &Metrics, result: wasmtime::Result<()>) {
    if let Err(error) = result {
        let kind = error
            .downcast_ref::<limits::Stopped>()
            .map_or("component_failed_streaming", |s| s.kind());
        metrics.error(kind);
        tracing::warn!("cache component failed while streaming: {error:#}");
    }
}

/// One request in the queue, until dropped.
struct Waiting<'a>(&'a std::sync::atomic::AtomicU32);

impl<'a> Waiting<'a> {
    /// None when `max` requests are waiting already.
    fn enter(count: &'a std::sync::atomic::AtomicU32, max: u32) -> Option<Waiting<'a>> {
        use std::sync::atomic::Ordering;
        count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Waiting(count))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The slots one request holds until its instance exits.
struct Slot {
    _request: OwnedSemaphorePermit,
    _upload: Option<OwnedSemaphorePermit>,
}

/// The protocol that served a request, as the component named it; an extension
/// of every response [`Runtime::handle`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServedBy(pub &'static str);

const PROTOCOL_HEADER: &str = blobcache_component::PROTOCOL_HEADER;

/// A small text response built by the host itself.
pub fn text_response(status: u16, text: &str) -> hyper::Response<HyperOutgoingBody> {
    let body = http_body_util::Full::new(Bytes::from(text.to_string()))
        .map_err(|never| match never {})
        .boxed_unsync();
    hyper::Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(body)
        .expect("static response parts are valid")
}

/// Bytes of each pooled memory and table kept mapped between requests: enough
/// for what one request of the cache component touches.
const KEEP_RESIDENT_MEMORY: usize = 1 << 20;
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

fn new_engine(config: &RuntimeConfig) -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    let instances = config.max_concurrent.max(1);
    pool.total_component_instances(instances);
    // A wasip2 component holds a few core instances, memories and tables.
    pool.total_core_instances(instances * 8);
    pool.total_memories(instances * 4);
    pool.total_tables(instances * 8);
    pool.max_memory_size(config.guest_memory);
    // Reset the pages a request touches with memset instead of returning them to
    // the kernel: otherwise each request faults them back in, and the TLB
    // shootdowns that follow cost more than the request itself.
    pool.linear_memory_keep_resident(KEEP_RESIDENT_MEMORY);
    pool.table_keep_resident(KEEP_RESIDENT_TABLE);
    let mut wasm = Config::new();
    wasm.epoch_interruption(true);
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(Engine::new(&wasm)?)
}

/// Advances the epoch until the engine is dropped.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("blobcache-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(limits::EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}

/// Compiles `wasm`, or loads the machine code compiled for it by an earlier run.
///
/// The cache file's name covers the component's bytes and everything about the
/// engine that affects code generation, so a different build never loads stale code.
pub fn load_component(
    engine: &Engine,
    wasm: &[u8],
    cache_dir: Option<&Path>,
) -> anyhow::Result<Component> {
    let Some(dir) = cache_dir else {
        return Ok(Component::from_binary(engine, wasm)?);
    };
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let name = format!(
        "component-{}-{:016x}.cwasm",
        &hex::encode(Sha256::digest(wasm))[..16],
        engine_hash.finish()
    );
    let path = dir.join(name);
    if path.exists() {
        // SAFETY: the file was written by `precompile_component` of an engine
        // with the same compatibility hash, in a directory owned by this user.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => {
                tracing::info!("loaded the compiled component from {}", path.display());
                return Ok(component);
            }
            Err(error) => tracing::warn!("ignoring compiled cache {}: {error:#}", path.display()),
        }
    }
    tracing::info!(
        "compiling the component (cached in {} for later starts)",
        dir.display()
    );
    let compiled = engine.precompile_component(wasm)?;
    if let Err(error) = write_atomically(&path, &compiled) {
        tracing::warn!(
            "could not cache compiled component in {}: {error:#}",
            dir.display()
        );
    }
    // SAFETY: `compiled` was produced by this engine just now.
    Ok(unsafe { Component::deserialize(engine, &compiled) }?)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(path.parent().unwrap())?;
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temp, bytes)?;
    std::fs::rename(&temp, path)
}
