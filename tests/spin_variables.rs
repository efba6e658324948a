//! The Spin build (`target/wasm/blobcache-spin.wasm`) takes its settings and
//! secrets from Spin variables. Spin itself cannot be installed here, so this test
//! is a minimal Spin-like host: wasmtime with WASI, wasi:http and an implementation
//! of `fermyon:spin/variables@2.0.0` answering from a map, exactly the interface
//! Spin gives components. The environment holds no settings at all.

mod support;

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime::component::{Component, ComponentType, Linker, Lower, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

use support::Azurite;

/// `fermyon:spin/variables@2.0.0`'s `error`.
#[derive(ComponentType, Lower, Clone, Debug)]
#[component(variant)]
enum VariableError {
    #[component(name = "invalid-name")]
    InvalidName(String),
    #[component(name = "undefined")]
    Undefined(String),
    #[component(name = "provider")]
    #[allow(dead_code)]
    Provider(String),
    #[component(name = "other")]
    #[allow(dead_code)]
    Other(String),
}

struct State {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    variables: HashMap<String, String>,
    outbound: OutboundPolicy,
}

type ResponseFuture = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

/// Spin's `allowed_outbound_hosts`: a request to any other authority is denied
/// with `HttpRequestDenied`, as Spin denies it.
#[derive(Clone)]
struct OutboundPolicy {
    /// None allows everything.
    allowed: Option<String>,
}

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        let authority = request.uri().authority().map(|a| a.to_string());
        if self.allowed.is_some() && authority != self.allowed {
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
            ))
        })
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// A host like Spin's: one instance per request, variables from `variables`.
struct SpinLikeHost {
    engine: Engine,
    pre: ProxyPre<State>,
    variables: HashMap<String, String>,
    outbound: OutboundPolicy,
}

impl SpinLikeHost {
    fn new(variables: &[(&str, &str)]) -> SpinLikeHost {
        SpinLikeHost::with_outbound(variables, None)
    }

    /// Like [`SpinLikeHost::new`], allowing outbound requests to `allowed` only.
    fn with_outbound(variables: &[(&str, &str)], allowed: Option<&str>) -> SpinLikeHost {
        let engine = Engine::default();
        let component = Component::from_file(&engine, env!("BLOBCACHE_SPIN_WASM")).unwrap();
        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).unwrap();
        linker
            .instance("fermyon:spin/variables@2.0.0")
            .unwrap()
            .func_wrap(
                "get",
                |store, (name,): (String,)| -> wasmtime::Result<(Result<String, VariableError>,)> {
                    let state: &State = store.data();
                    // Spin's rule for names: lowercase letters, digits, underscores.
                    let valid = name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                    Ok((match (valid, state.variables.get(&name)) {
                        (false, _) => Err(VariableError::InvalidName(name)),
                        (true, Some(value)) => Ok(value.clone()),
                        (true, None) => Err(VariableError::Undefined(name)),
                    },))
                },
            )
            .unwrap();
        let pre = ProxyPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
        SpinLikeHost {
            engine,
            pre,
            variables: variables
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            outbound: OutboundPolicy {
                allowed: allowed.map(str::to_string),
            },
        }
    }

    /// One request through a fresh instance: status and whole body.
    async fn send(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let state = State {
            table: ResourceTable::new(),
            // No environment: every setting must come from the variables.
            wasi: WasiCtx::builder().inherit_stderr().build(),
            http: WasiHttpCtx::new(),
            variables: self.variables.clone(),
            outbound: self.outbound.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("http://blobcache{path}"))
            .header("content-length", body.len())
            .body(Full::new(Bytes::copy_from_slice(body)).map_err(
                |never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} },
            ))
            .unwrap();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .unwrap();
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .unwrap();
        let pre = self.pre.clone();
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, out)
                .await
        });
        let response = receiver.await.unwrap().unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        task.await.unwrap().unwrap();
        (status, body.to_vec())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_spin_build_reads_its_settings_and_secrets_from_spin_variables() {
    let azurite = Azurite::start();
    azurite.create_container("spin-vars");
    let connection = azurite.connection_string();
    let host = SpinLikeHost::new(&[
        ("azure_storage_connection_string", &connection),
        ("blobcache_azure_container", "spin-vars"),
        ("blobcache_azure_prefix", "from-variables/"),
    ]);
    let blob = b"an object file".repeat(1000);
    let path = format!("/cas/{}", support::sha256_hex(&blob));
    let (status, text) = host.send("PUT", &path, &blob).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&text));
    let (status, body) = host.send("GET", &path, b"").await;
    assert_eq!(status, 200);
    assert!(body == blob);
    let (_, status_json) = host.send("GET", "/status", b"").await;
    let status_text = String::from_utf8_lossy(&status_json);
    assert!(
        status_text.contains("spin-vars/from-variables/"),
        "container and prefix from the variables: {status_text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_variables_the_spin_build_names_the_missing_setting() {
    let host = SpinLikeHost::new(&[]);
    let (status, text) = host
        .send("GET", &format!("/cas/{}", "2".repeat(64)), b"")
        .await;
    let text = String::from_utf8_lossy(&text);
    assert_eq!(status, 500, "{text}");
    assert!(text.contains("AZURE_STORAGE_CONNECTION_STRING"), "{text}");
}

/// A destination the host denies (on Spin: not in `allowed_outbound_hosts`) is
/// final: answered at once, naming the likely cause, not retried for seconds.
#[tokio::test(flavor = "multi_thread")]
async fn a_denied_destination_is_reported_at_once_not_retried() {
    let azurite = Azurite::start();
    let connection = azurite.connection_string();
    let host = SpinLikeHost::with_outbound(
        &[("azure_storage_connection_string", &connection)],
        Some("storage.example:443"),
    );
    let started = std::time::Instant::now();
    let (status, text) = host
        .send("GET", &format!("/cas/{}", "3".repeat(64)), b"")
        .await;
    let text = String::from_utf8_lossy(&text);
    assert_eq!(status, 500, "{text}");
    assert!(text.contains("allowed_outbound_hosts"), "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "a denied request was retried: {:?}",
        started.elapsed()
    );
}
