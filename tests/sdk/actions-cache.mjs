// Saves or restores a cache with GitHub's own `actions/cache` library (npm
// @actions/cache, the code behind the `actions/cache` action), against the cache
// service v2 at ACTIONS_RESULTS_URL with ACTIONS_RUNTIME_TOKEN, as a
// self-hosted runner does. The caller sets ACTIONS_CACHE_SERVICE_V2, RUNNER_TEMP
// and the working directory.
//   node actions-cache.mjs save <key> <path>...
//   node actions-cache.mjs restore <key> <restore keys, comma-separated or -> <path>...
// Prints one JSON document: {"cacheId"} or {"matched"}, or {"error"}.
import * as cache from "@actions/cache";

const [mode, key, ...rest] = process.argv.slice(2);
try {
  if (mode === "save") {
    const cacheId = await cache.saveCache(rest, key);
    console.log(JSON.stringify({ cacheId }));
  } else if (mode === "restore") {
    const [restoreKeys, ...paths] = rest;
    const keys = restoreKeys === "-" ? [] : restoreKeys.split(",");
    const matched = await cache.restoreCache(paths, key, keys);
    console.log(JSON.stringify({ matched: matched ?? null }));
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
} catch (error) {
  console.log(JSON.stringify({ error: String(error.message ?? error), name: error.name }));
}
