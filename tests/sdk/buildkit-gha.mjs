// Replays BuildKit's `type=gha` cache export and import against the GitHub
// Actions cache service v2, request for request as BuildKit's vendored
// go-actions-cache sends them (twirp JSON with size_bytes as a number; the
// data plane through the signed URL with Azure's Go SDK shapes):
//
//   export: per blob `buildkit-blob-1-<digest>`: a lookup, then CreateCacheEntry
//           (409 already_exists means another writer has it), the bytes (one Put
//           Blob under 1 MiB, else sequential 1 MiB Put Blocks with 88-character
//           ids and a Put Block List; every answer must carry x-ms-request-id),
//           FinalizeCacheEntryUpload; then the index as `<index key>#N`, N one
//           past the newest, again on a 409.
//   import: the newest `<index key>#` by prefix, then every blob: one GET,
//           read halfway, and re-opened with `x-ms-range: bytes=N-` (206).
//
//   node buildkit-gha.mjs '<json>'
//   {"mode": "export" | "import" | "call", "url", "token", "scope", "indexKey",
//    "blobs": [{"file", "digest"}], "method", "body" (call mode)}
// Prints one JSON document with what happened.
import { createHash } from "node:crypto";
import { open, stat } from "node:fs/promises";

const VERSION = "693bb7016429d80366022f036f84856888c9f13e00145f5f6f4dce303a38d6f2";
const BLOCK = 1024 * 1024;
const plan = JSON.parse(process.argv[2]);

async function twirp(method, body) {
  const response = await fetch(
    new URL(`twirp/github.actions.results.api.v1.CacheService/${method}`, plan.url),
    {
      method: "POST",
      headers: { authorization: `Bearer ${plan.token}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    },
  );
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`${method}: ${response.status} with a body that is not JSON: ${text}`);
  }
  return { status: response.status, json };
}

// Go's url.Values.Encode: parameters sorted, values escaped again.
function reencode(signed) {
  const url = new URL(signed);
  const params = [...url.searchParams.entries()].sort(([a], [b]) => a.localeCompare(b));
  url.search = new URLSearchParams(params).toString();
  return url;
}

async function azure(url, init) {
  const response = await fetch(url, init);
  if (init.method === "PUT" && !response.headers.get("x-ms-request-id")) {
    throw new Error(`${init.method} ${url.pathname}: no x-ms-request-id in the answer`);
  }
  return response;
}

function blockId(index) {
  return Buffer.from(String(index).padStart(64, "0")).toString("base64");
}

async function upload(signed, file) {
  const size = (await stat(file)).size;
  const handle = await open(file);
  const target = reencode(signed);
  try {
    if (size < BLOCK) {
      const { buffer } = await handle.read({ buffer: Buffer.alloc(size), position: 0 });
      const r = await azure(target, {
        method: "PUT",
        headers: { "x-ms-blob-type": "BlockBlob", "content-length": String(size) },
        body: buffer,
      });
      if (r.status !== 201) throw new Error(`Put Blob: ${r.status} ${await r.text()}`);
      return size;
    }
    const ids = [];
    for (let offset = 0, index = 0; offset < size; offset += BLOCK, index++) {
      const length = Math.min(BLOCK, size - offset);
      const { buffer } = await handle.read({ buffer: Buffer.alloc(length), position: offset });
      const id = blockId(index);
      const url = new URL(target);
      url.searchParams.set("comp", "block");
      url.searchParams.set("blockid", id);
      const r = await azure(url, { method: "PUT", headers: { "content-length": String(length) }, body: buffer });
      if (r.status !== 201) throw new Error(`Put Block: ${r.status} ${await r.text()}`);
      ids.push(id);
    }
    const url = new URL(target);
    url.searchParams.set("comp", "blocklist");
    const xml = `<?xml version="1.0" encoding="UTF-8"?><BlockList>${ids.map((id) => `<Latest>${id}</Latest>`).join("")}</BlockList>`;
    const r = await azure(url, { method: "PUT", headers: { "content-type": "application/xml" }, body: xml });
    if (r.status !== 201) throw new Error(`Put Block List: ${r.status} ${await r.text()}`);
    return size;
  } finally {
    await handle.close();
  }
}

async function save(key, file) {
  const reserved = await twirp("CreateCacheEntry", { key, version: VERSION });
  if (reserved.status === 409) return { key, status: 409, code: reserved.json.code };
  if (reserved.status !== 200 || !reserved.json.ok) throw new Error(`CreateCacheEntry: ${JSON.stringify(reserved)}`);
  const size = await upload(reserved.json.signed_upload_url, file);
  const finalized = await twirp("FinalizeCacheEntryUpload", { key, version: VERSION, size_bytes: size });
  if (finalized.status !== 200 || typeof finalized.json.entry_id !== "string") {
    throw new Error(`FinalizeCacheEntryUpload: ${JSON.stringify(finalized)}`);
  }
  return { key, status: 200, size };
}

async function lookup(key) {
  const found = await twirp("GetCacheEntryDownloadURL", { key, restore_keys: [], version: VERSION });
  if (found.status !== 200) throw new Error(`GetCacheEntryDownloadURL: ${JSON.stringify(found)}`);
  return found.json;
}

async function exportCache() {
  const blobs = [];
  for (const blob of plan.blobs) {
    const key = `buildkit-blob-1-${blob.digest}`;
    if ((await lookup(key)).ok) {
      blobs.push({ key, skipped: true });
      continue;
    }
    blobs.push(await save(key, blob.file));
  }
  // SaveMutable: one past the newest index entry, again on a conflict.
  const newest = await lookup(`${plan.indexKey}#`);
  let next = newest.ok ? Number(newest.matched_key.split("#").pop()) + 1 : 1;
  const indexFile = `${process.env.TMPDIR ?? "/tmp"}/gha-index-${process.pid}.json`;
  const { writeFile } = await import("node:fs/promises");
  await writeFile(indexFile, JSON.stringify({ blobs: plan.blobs.map((b) => b.digest) }));
  let index;
  for (let tries = 0; tries < 5; tries++, next++) {
    index = await save(`${plan.indexKey}#${next}`, indexFile);
    if (index.status === 200) break;
  }
  return { blobs, index };
}

async function download(signed, reopenAt) {
  const url = reencode(signed);
  const first = await fetch(url);
  if (first.status !== 200) throw new Error(`GET: ${first.status}`);
  const hash = createHash("sha256");
  let size = 0;
  const reader = first.body.getReader();
  // Read up to `reopenAt`, then drop the connection, as a cut download does.
  while (size < reopenAt) {
    const { value, done } = await reader.read();
    if (done) break;
    const wanted = value.subarray(0, Math.min(value.length, reopenAt - size));
    hash.update(wanted);
    size += wanted.length;
  }
  await reader.cancel();
  const rest = await fetch(url, { headers: { "x-ms-range": `bytes=${size}-` } });
  if (rest.status !== 206) throw new Error(`x-ms-range re-open: ${rest.status}`);
  for await (const chunk of rest.body) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { size, sha256: hash.digest("hex"), reopened: rest.headers.get("content-range") };
}

async function importCache() {
  const index = await lookup(`${plan.indexKey}#`);
  if (!index.ok) return { index: null };
  const response = await fetch(reencode(index.signed_download_url));
  const digests = JSON.parse(await response.text()).blobs;
  const blobs = [];
  for (const digest of digests) {
    const found = await lookup(`buildkit-blob-1-${digest}`);
    if (!found.ok) {
      blobs.push({ digest, missing: true });
      continue;
    }
    blobs.push({ digest, ...(await download(found.signed_download_url, 300 * 1024)) });
  }
  return { index: index.matched_key, blobs };
}

async function call() {
  return await twirp(plan.method, plan.body);
}

const modes = { export: exportCache, import: importCache, call };
try {
  console.log(JSON.stringify(await modes[plan.mode]()));
} catch (error) {
  console.log(JSON.stringify({ error: String(error.message ?? error) }));
  process.exit(1);
}
