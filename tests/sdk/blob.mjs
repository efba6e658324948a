// Reads or writes one blob with Microsoft's SDK (@azure/storage-blob), so tests can
// check that blobcache and the SDK see the same bytes.
//   node blob.mjs download <connection string> <container> <blob> <file>
//   node blob.mjs upload   <connection string> <container> <blob> <file> [block size]
import { BlobServiceClient } from "@azure/storage-blob";

const [mode, connection, container, blob, file, blockSize] = process.argv.slice(2);
const client = BlobServiceClient.fromConnectionString(connection)
  .getContainerClient(container)
  .getBlockBlobClient(blob);

if (mode === "download") {
  await client.downloadToFile(file);
} else if (mode === "upload") {
  const size = Number(blockSize || 4 * 1024 * 1024);
  // A single-shot limit below the size forces Put Block + Put Block List.
  await client.uploadFile(file, { blockSize: size, maxSingleShotSize: size, concurrency: 4 });
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
