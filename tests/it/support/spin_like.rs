//! A minimal Spin-like host: wasmtime with WASI, wasi:http and an
//! implementation of `fermyon:spin/variables@2.0.0` answering from a map,
//! exactly the interface Spin gives components, running the Spin build
//! (`target/wasm/blobcache-spin.wasm`) with a fresh instance per request and an
//! empty environment, so every setting must come from the variables.
//!
//! [`serve`] puts it behind an HTTP/1.1 listener, so the same scenarios run
//! against it as against every other host.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use wasmtime::component::{Component, ComponentType, Linker, Lower, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

use super::Server;

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
}

impl SpinLikeHost {
    fn request_store(&self) -> Store<State> {
        let state = State {
            table: ResourceTable::new(),
            // No environment: every setting must come from the variables.
            wasi: WasiCtx::builder().inherit_stderr().build(),
            http: WasiHttpCtx::new(),
            variables: self.variables.clone(),
            outbound: self.outbound.clone(),
        };
        Store::new(&self.engine, state)
    }

    /// Serves one HTTP request with a fresh instance, streaming both bodies.
    async fn handle(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> anyhow::Result<hyper::Response<HyperOutgoingBody>> {
        let mut store = self.request_store();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, out)
                .await
        });
        match receiver.await {
            Ok(Ok(response)) => {
                tokio::spawn(task);
                Ok(response)
            }
            Ok(Err(code)) => anyhow::bail!("the component answered with error {code:?}"),
            Err(_) => anyhow::bail!("the component failed: {:?}", task.await),
        }
    }
}

/// The Spin build on a Spin-like host, listening on a free loopback port.
pub fn serve(variables: &[(&str, &str)]) -> Server {
    serve_with_outbound(variables, None)
}

/// [`serve`], allowing outbound requests to the authority `allowed` only.
pub fn serve_with_outbound(variables: &[(&str, &str)], allowed: Option<&str>) -> Server {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let host = Arc::new(SpinLikeHost::with_outbound(variables, allowed));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let host = host.clone();
            let service = service_fn(move |request| {
                let host = host.clone();
                async move {
                    let response = match host.handle(request).await {
                        Ok(response) => response,
                        Err(error) => {
                            let body = Full::new(Bytes::from(format!("{error:#}\n")))
                                .map_err(|never| match never {})
                                .boxed_unsync();
                            hyper::Response::builder().status(500).body(body).unwrap()
                        }
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    Server::in_process(addr, runtime)
}
