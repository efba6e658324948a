//! Offline checks that the composed components the build makes run where they
//! are meant to: each must *target* its host's world (`deploy/targets/targets.wit`),
//! which is the check `wasm-tools component targets` runs (`wit_component::targets`):
//! every import is one the host provides, and the export is `incoming-handler`.
//! Also checks `spin.toml` against the build's outputs.

use crate::support;
use std::path::Path;

use wit_parser::Resolve;

/// Whether `component` targets `world` of `deploy/targets/targets.wit`.
fn targets(component: &str, world: &str) -> Result<(), String> {
    let root = support::repo_root();
    let mut resolve = Resolve::default();
    resolve.push_dir(root.join("wit")).unwrap();
    let (package, _) = resolve
        .push_path(root.join("deploy/targets/targets.wit"))
        .unwrap();
    let world = resolve.select_world(&[package], Some(world)).unwrap();
    let bytes = std::fs::read(component).unwrap();
    // Exact names, patch versions included, as a host's linker sees them.
    wit_component::targets(&resolve, world, &bytes, false).map_err(|e| format!("{e:#}"))
}

/// The names a component imports.
fn imports(component: &str) -> Vec<String> {
    let bytes = std::fs::read(component).unwrap();
    let mut names = Vec::new();
    // Only the outer component's imports; nested components and modules are
    // satisfied inside it.
    let mut depth = 0;
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        match payload.unwrap() {
            wasmparser::Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    names.push(import.unwrap().name.name.to_string());
                }
            }
            wasmparser::Payload::ModuleSection { .. }
            | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth -= 1,
            _ => {}
        }
    }
    names
}

#[test]
fn the_composed_component_imports_only_wasi_and_runs_on_wasmtime_serve() {
    let composed = env!("BLOBCACHE_WASM");
    let names = imports(composed);
    assert!(!names.is_empty());
    assert!(
        names.iter().all(|n| n.starts_with("wasi:")),
        "non-WASI imports: {names:?}"
    );
    targets(composed, "wasmtime-serve").unwrap();
    // Rust's standard library imports wasi:cli (the environment holds our
    // settings; stdio carries panics), so the bare proxy world is not enough:
    // hosts must give wasi:cli too (`wasmtime serve -S cli`).
    let bare = targets(composed, "http-proxy").unwrap_err();
    assert!(bare.contains("missing import named `wasi:cli/"), "{bare}");
}

#[test]
fn the_spin_build_targets_spins_world() {
    let composed = env!("BLOBCACHE_SPIN_WASM");
    let names = imports(composed);
    assert!(
        names.contains(&"fermyon:spin/variables@2.0.0".to_string()),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("wasi:") || n == "fermyon:spin/variables@2.0.0"),
        "{names:?}"
    );
    targets(composed, "spin-http").unwrap();
    // Spin variables are Spin's: the Spin build does not run on plain wasmtime.
    let elsewhere = targets(composed, "wasmtime-serve").unwrap_err();
    assert!(elsewhere.contains("fermyon:spin/variables"), "{elsewhere}");
}

#[test]
fn the_store_component_alone_is_not_an_http_component() {
    let store = env!("BLOBCACHE_WASM").replace("blobcache.wasm", "blobcache-azure-store.wasm");
    let names = imports(&store);
    assert!(names.iter().all(|n| n.starts_with("wasi:")), "{names:?}");
    let error = targets(&store, "wasmtime-serve").unwrap_err();
    assert!(error.contains("incoming-handler"), "{error}");
}

#[test]
fn spin_toml_serves_the_spin_build_with_azure_settings_from_variables() {
    let root = support::repo_root();
    let text = std::fs::read_to_string(root.join("spin.toml")).unwrap();
    let manifest: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(manifest["spin_manifest_version"].as_integer(), Some(2));
    let trigger = &manifest["trigger"]["http"][0];
    assert_eq!(trigger["route"].as_str(), Some("/..."));
    let id = trigger["component"].as_str().unwrap();
    let component = &manifest["component"][id];
    // The source is what the build writes.
    let source = root.join(component["source"].as_str().unwrap());
    assert_eq!(
        std::fs::canonicalize(&source).unwrap(),
        std::fs::canonicalize(Path::new(env!("BLOBCACHE_SPIN_WASM"))).unwrap()
    );
    // The outbound host is a variable (Azurite, sovereign clouds, private
    // endpoints) whose default is the public cloud.
    let hosts = component["allowed_outbound_hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(hosts[0].as_str(), Some("{{ azure_outbound_host }}"));
    let outbound = &manifest["variables"]["azure_outbound_host"]["default"];
    assert_eq!(outbound.as_str(), Some("https://*.blob.core.windows.net"));
    // Every setting the store reads is a Spin variable, and the secrets are secret.
    let variables = manifest["variables"].as_table().unwrap();
    let passed = component["variables"].as_table().unwrap();
    for name in [
        "azure_storage_account",
        "azure_storage_key",
        "azure_storage_sas_token",
        "azure_storage_connection_string",
        "azure_storage_blob_endpoint",
        "blobcache_azure_container",
        "blobcache_azure_prefix",
        "blobcache_tokens",
        "blobcache_max_blob_size",
    ] {
        assert!(
            variables.contains_key(name),
            "no application variable {name}"
        );
        assert_eq!(
            passed[name].as_str(),
            Some(format!("{{{{ {name} }}}}").as_str()),
            "{name} is not passed to the component"
        );
    }
    for secret in [
        "azure_storage_key",
        "azure_storage_sas_token",
        "azure_storage_connection_string",
        "blobcache_tokens",
    ] {
        assert_eq!(
            variables[secret]["secret"].as_bool(),
            Some(true),
            "{secret}"
        );
    }
}

/// The custom sections of a component and every module inside it.
fn custom_sections(component: &str) -> Vec<(String, usize)> {
    let bytes = std::fs::read(component).unwrap();
    let mut sections = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        if let wasmparser::Payload::CustomSection(section) = payload.unwrap() {
            sections.push((section.name().to_string(), section.data().len()));
        }
    }
    sections
}

/// What deploys (`wasmtime serve`, Spin, the component the host embeds) ships
/// without DWARF, which was most of its size, and keeps its name sections, so
/// traps and profiles still name guest functions.
#[test]
fn deployed_components_ship_without_dwarf_and_keep_their_names() {
    for component in [
        env!("BLOBCACHE_WASM"),
        env!("BLOBCACHE_SPIN_WASM"),
        env!("BLOBCACHE_COMPONENT_WASM"),
    ] {
        let sections = custom_sections(component);
        let dwarf: Vec<&(String, usize)> = sections
            .iter()
            .filter(|(name, _)| name.starts_with(".debug"))
            .collect();
        assert!(dwarf.is_empty(), "{component}: {dwarf:?}");
        assert!(
            sections.iter().any(|(name, _)| name == "name"),
            "{component}: no name section"
        );
        let size = std::fs::metadata(component).unwrap().len();
        assert!(size < 4 << 20, "{component}: {size} bytes");
    }
}
