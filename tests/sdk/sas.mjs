// Prints a container SAS token made by Microsoft's SDK (@azure/storage-blob), so
// tests can check that blobcache works with a SAS instead of the account key.
//   node sas.mjs <account> <key> <container> <permissions> <seconds valid>
import { ContainerSASPermissions, StorageSharedKeyCredential, generateBlobSASQueryParameters } from "@azure/storage-blob";

const [account, key, container, permissions, seconds] = process.argv.slice(2);
const now = Date.now();
const sas = generateBlobSASQueryParameters(
  {
    containerName: container,
    permissions: ContainerSASPermissions.parse(permissions),
    startsOn: new Date(now - 300 * 1000),
    expiresOn: new Date(now + Number(seconds) * 1000),
  },
  new StorageSharedKeyCredential(account, key),
);
console.log(sas.toString());
