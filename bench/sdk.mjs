// Times Microsoft's SDK (@azure/storage-blob) moving one file to or from a blob,
// `repeat` times, and prints "<seconds> <peak rss bytes>". Only the SDK calls are
// timed, not Node's start.
//   node sdk.mjs <upload|download> <connection string> <container> <blob> <file> <repeat>
import { BlobServiceClient } from "@azure/storage-blob";
import { resourceUsage } from "node:process";

const [mode, connection, container, blob, file, repeat] = process.argv.slice(2);
const client = BlobServiceClient.fromConnectionString(connection)
  .getContainerClient(container)
  .getBlockBlobClient(blob);
const start = process.hrtime.bigint();
for (let i = 0; i < Number(repeat); i++) {
  if (mode === "upload") await client.uploadFile(file);
  else {
    // Consume and discard, as the blobcache side does.
    const response = await client.download();
    for await (const _chunk of response.readableStreamBody) {
    }
  }
}
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
console.log(`${seconds} ${resourceUsage().maxRSS * 1024}`);
