// Replays BuildKit's `type=azblob` cache export and import with Microsoft's SDK
// (@azure/storage-blob signs Shared Key exactly as BuildKit's Go SDK does), so
// tests and benchmarks can drive blobcache's /azure endpoint, or Azurite, the way
// BuildKit does (cache/remotecache/azblob in moby/buildkit):
//
//   export: container properties (create on ContainerNotFound); per layer HEAD,
//           then with If-None-Match: * one Put Blob under 32 MiB, else 32 MiB
//           Put Blocks (4 in flight, 88-character ids) and Put Block List; a
//           409 BlobAlreadyExists counts as done; the manifest last, overwritten.
//   import: container properties; HEAD and whole GET of the manifest; per layer
//           HEAD and whole GET, checked against its digest.
//
//   node buildkit-azblob.mjs '<json>'
//   {"mode": "export" | "import" | "call", "accountUrl", "account", "key",
//    "container", "prefix", "name", "layers": [{"file", "digest"}],
//    "escapeSlash": true (BuildKit 0.20+ sends `/` in names as %2F),
//    "op": "put" | "get" | "head" | "list" | "delete" (call mode), "blob", "body"}
// Prints one JSON document with what happened.
import { BlockBlobClient, ContainerClient, StorageSharedKeyCredential } from "@azure/storage-blob";
import { createHash } from "node:crypto";
import { open, stat } from "node:fs/promises";

const BLOCK = 32 * 1024 * 1024;
const IN_FLIGHT = 4;

const plan = JSON.parse(process.argv[2]);
const credential = new StorageSharedKeyCredential(plan.account, plan.key);
const containerUrl = `${plan.accountUrl}/${plan.container}`;
const container = new ContainerClient(containerUrl, credential);

function blobName(kind, rest) {
  return [plan.prefix, kind, rest].filter((p) => p).join("/");
}

function blobClient(name) {
  const escaped = plan.escapeSlash === false
    ? name
    : name.split("/").map(encodeURIComponent).join("%2F").replaceAll("%3A", ":");
  return new BlockBlobClient(`${containerUrl}/${escaped}`, credential);
}

function failure(error) {
  return { status: error.statusCode ?? 0, code: error.code ?? error.details?.errorCode ?? String(error) };
}

async function ensureContainer() {
  try {
    await container.getProperties();
    return "existed";
  } catch (error) {
    if (error.statusCode === 404) {
      await container.create();
      return "created";
    }
    throw error;
  }
}

// 64 zero-padded digits, base64: 88 characters, as BuildKit names its blocks.
function blockId(index) {
  return Buffer.from(String(index).padStart(64, "0")).toString("base64");
}

async function uploadLayer(layer) {
  const client = blobClient(blobName("blobs", layer.digest));
  if (await client.exists()) return { digest: layer.digest, skipped: true };
  const size = (await stat(layer.file)).size;
  const file = await open(layer.file);
  const conditions = { ifNoneMatch: "*" };
  try {
    if (size < BLOCK) {
      const { buffer } = await file.read({ buffer: Buffer.alloc(size), position: 0 });
      await client.upload(buffer, size, { conditions });
      return { digest: layer.digest, upload: "put-blob", status: 201 };
    }
    const ids = [];
    for (let offset = 0, index = 0; offset < size; offset += BLOCK, index++) ids.push([blockId(index), offset]);
    let next = 0;
    const worker = async () => {
      while (next < ids.length) {
        const [id, offset] = ids[next++];
        const length = Math.min(BLOCK, size - offset);
        const { buffer } = await file.read({ buffer: Buffer.alloc(length), position: offset });
        await client.stageBlock(id, buffer, length);
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    await client.commitBlockList(ids.map(([id]) => id), { conditions });
    return { digest: layer.digest, upload: "blocks", blocks: ids.length, status: 201 };
  } catch (error) {
    if (error.statusCode === 409 && error.code === "BlobAlreadyExists") {
      return { digest: layer.digest, status: 409 };
    }
    throw error;
  } finally {
    await file.close();
  }
}

async function exportCache() {
  const result = { container: await ensureContainer(), layers: [] };
  for (const layer of plan.layers) result.layers.push(await uploadLayer(layer));
  const config = {
    layers: plan.layers.map((l) => ({ blob: l.digest, parent: -1 })),
    records: [{ digest: "sha256:" + "0".repeat(64), results: [{ layer: 0 }] }],
  };
  const text = JSON.stringify(config);
  await blobClient(blobName("manifests", plan.name)).upload(text, Buffer.byteLength(text));
  result.manifest = 201;
  return result;
}

async function download(client) {
  const response = await client.download();
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of response.readableStreamBody) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { status: response._response.status, size, sha256: hash.digest("hex") };
}

async function importCache() {
  const result = { container: await ensureContainer(), layers: [] };
  const manifest = blobClient(blobName("manifests", plan.name));
  if (!(await manifest.exists())) return { ...result, manifest: null };
  const response = await manifest.download();
  const chunks = [];
  for await (const chunk of response.readableStreamBody) chunks.push(chunk);
  result.manifest = JSON.parse(Buffer.concat(chunks).toString());
  for (const layer of result.manifest.layers) {
    const client = blobClient(blobName("blobs", layer.blob));
    if (!(await client.exists())) {
      result.layers.push({ digest: layer.blob, missing: true });
      continue;
    }
    result.layers.push({ digest: layer.blob, ...(await download(client)) });
  }
  return result;
}

async function call() {
  const client = blobClient(plan.blob ?? "");
  try {
    switch (plan.op) {
      case "put": {
        const body = plan.body ?? "";
        const r = await client.upload(body, Buffer.byteLength(body), plan.ifNoneMatch ? { conditions: { ifNoneMatch: "*" } } : {});
        return { status: r._response.status, requestId: r.requestId };
      }
      case "get":
        return await download(client);
      case "head": {
        const r = await client.getProperties();
        return { status: r._response.status, size: r.contentLength };
      }
      case "delete": {
        const r = await client.delete();
        return { status: r._response.status };
      }
      case "list": {
        const names = [];
        const pages = container.listBlobsFlat({ prefix: plan.prefix, includeMetadata: true })
          .byPage({ maxPageSize: plan.pageSize ?? 5000 });
        let pageCount = 0;
        for await (const page of pages) {
          pageCount++;
          for (const blob of page.segment.blobItems) names.push([blob.name, blob.properties.contentLength]);
        }
        return { status: 200, names, pages: pageCount };
      }
      case "container":
        return { status: 200, container: await ensureContainer() };
      default:
        throw new Error(`unknown op ${plan.op}`);
    }
  } catch (error) {
    return failure(error);
  }
}

const modes = { export: exportCache, import: importCache, call };
try {
  const start = process.hrtime.bigint();
  const result = await modes[plan.mode]();
  // Seconds spent in the SDK calls, without Node's start (for bench/azblob.py).
  result.seconds = Number(process.hrtime.bigint() - start) / 1e9;
  console.log(JSON.stringify(result));
} catch (error) {
  console.log(JSON.stringify({ error: failure(error), message: String(error.message ?? error) }));
  process.exit(1);
}
