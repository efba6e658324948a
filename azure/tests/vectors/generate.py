#!/usr/bin/env python3
"""Generate Azure Blob Storage Shared Key / Service SAS test vectors.

Every string-to-sign, Authorization header and SAS token here is produced by
Microsoft's official Python SDK (PyPI `azure-storage-blob` + `azure-core`)
running its OWN signing code; nothing is reimplemented. This script only feeds
inputs in and captures what comes out (it hooks the SDK's `sign_string` calls
to record the exact string that was signed).

    pip install azure-storage-blob
    python3 azure/tests/vectors/generate.py

Writes shared_key.json next to this file.
"""

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
from importlib.metadata import version as pkg_version

from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.rest import HttpRequest as RestHttpRequest
from azure.core.pipeline.transport import HttpRequest as LegacyHttpRequest

import azure.storage.blob
import azure.storage.blob._shared.authentication as sk_auth
import azure.storage.blob._shared_access_signature as blob_sas_mod
from azure.storage.blob._shared.authentication import SharedKeyCredentialPolicy

# --------------------------------------------------------------------------
# Accounts
# --------------------------------------------------------------------------
ACCOUNT_A = "devstoreaccount1"
KEY_A = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
ENDPOINT_A = "http://127.0.0.1:10000/devstoreaccount1"

ACCOUNT_B = "myaccount"
KEY_B = base64.b64encode(bytes(range(32))).decode("ascii")
ENDPOINT_B = "https://myaccount.blob.core.windows.net"

X_MS_DATE = "Thu, 26 Nov 2026 12:00:00 GMT"
X_MS_VERSION = "2021-08-06"
BASE_HEADERS = [("x-ms-date", X_MS_DATE), ("x-ms-version", X_MS_VERSION)]

BLOCK_ID = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+/w=="
BLOCK_ID_PCT = BLOCK_ID.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")

# --------------------------------------------------------------------------
# Shared Key cases: (name, account, key, method, url, extra headers)
# --------------------------------------------------------------------------
SHARED_KEY_CASES = [
    ("put_blob", ACCOUNT_B, KEY_B, "PUT", ENDPOINT_B + "/cache/bazel/cas/abc", [
        ("x-ms-blob-type", "BlockBlob"),
        ("Content-Length", "11"),
        ("Content-Type", "application/octet-stream"),
        ("If-None-Match", "*"),
        ("x-ms-meta-sha256", "0123abcd"),
    ]),
    ("put_blob_empty", ACCOUNT_B, KEY_B, "PUT", ENDPOINT_B + "/cache/bazel/cas/abc", [
        ("x-ms-blob-type", "BlockBlob"),
        ("Content-Length", "0"),
    ]),
    ("put_block", ACCOUNT_B, KEY_B, "PUT",
     ENDPOINT_B + "/cache/big?comp=block&blockid=" + BLOCK_ID_PCT, [
        ("Content-Length", "1024"),
    ]),
    ("put_block_list", ACCOUNT_B, KEY_B, "PUT", ENDPOINT_B + "/cache/big?comp=blocklist", [
        ("Content-Length", "120"),
        ("Content-Type", "application/xml"),
        ("If-Match", '"0x8D8C3B7E2B1A2B3"'),
    ]),
    ("get_range", ACCOUNT_B, KEY_B, "GET", ENDPOINT_B + "/cache/bazel/ac/def", [
        ("x-ms-range", "bytes=0-99"),
    ]),
    ("head", ACCOUNT_B, KEY_B, "HEAD", ENDPOINT_B + "/cache/bazel/ac/def", []),
    ("delete", ACCOUNT_B, KEY_B, "DELETE", ENDPOINT_B + "/cache/bazel/ac/def", []),
    ("list", ACCOUNT_B, KEY_B, "GET",
     ENDPOINT_B + "/cache?restype=container&comp=list&prefix=bazel%2F&marker=2%21abc"
     "&maxresults=100&include=metadata", []),
    ("create_container", ACCOUNT_B, KEY_B, "PUT", ENDPOINT_B + "/cache?restype=container", [
        ("Content-Length", "0"),
    ]),
    ("azurite_put", ACCOUNT_A, KEY_A, "PUT", ENDPOINT_A + "/cache/ccache/ab/cd", [
        ("Content-Length", "5"),
        ("x-ms-blob-type", "BlockBlob"),
    ]),
    ("azurite_list", ACCOUNT_A, KEY_A, "GET",
     ENDPOINT_A + "/cache?restype=container&comp=list&prefix=ccache%2F", []),
    ("encoded_name", ACCOUNT_B, KEY_B, "PUT", ENDPOINT_B + "/cache/dir/a%20b%2Bc", [
        ("Content-Length", "3"),
        ("x-ms-blob-type", "BlockBlob"),
    ]),
]

UTC = dt.timezone.utc
T_START = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
T_EXPIRY = dt.datetime(2026, 11, 26, 13, 0, 0, tzinfo=UTC)

# (name, account, key, container, blob, permission, start, expiry, protocol)
SAS_CASES = [
    ("sas_read", ACCOUNT_B, KEY_B, "cache", "bazel/cas/abc", "r", T_START, T_EXPIRY, "https"),
    ("sas_create_write", ACCOUNT_B, KEY_B, "cache", "bazel/cas/abc", "cw", None, T_EXPIRY, None),
    ("sas_azurite", ACCOUNT_A, KEY_A, "cache", "ccache/ab/cd", "r", None, T_EXPIRY, None),
]
PINNED_SAS_VERSION = "2021-08-06"


def iso(t):
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")


def hmac_b64(key_b64, s):
    return base64.b64encode(
        hmac.new(base64.b64decode(key_b64), s.encode("utf-8"), hashlib.sha256).digest()
    ).decode("ascii")


class SignCapture:
    """Context manager that wraps a module's `sign_string` to record its input."""

    def __init__(self, module):
        self.module = module
        self.calls = []

    def __enter__(self):
        self.orig = self.module.sign_string

        def wrapped(key, string_to_sign, *a, **kw):
            sig = self.orig(key, string_to_sign, *a, **kw)
            self.calls.append((string_to_sign, sig))
            return sig

        self.module.sign_string = wrapped
        return self

    def __exit__(self, *exc):
        self.module.sign_string = self.orig


def sign_shared_key(request_cls, account, key, method, url, headers):
    """Run SharedKeyCredentialPolicy.on_request on a request built from exactly
    the given method/url/headers. Returns (string_to_sign, authorization,
    headers_after_without_authorization, string_to_sign_from_add_auth)."""
    http_request = request_cls(method, url, headers=dict(headers))
    before = list(http_request.headers.items())
    pipeline_request = PipelineRequest(http_request, PipelineContext(None))
    policy = SharedKeyCredentialPolicy(account, key)

    # Capture via _add_authorization_header (instance-level wrap) ...
    seen = []
    orig_add = policy._add_authorization_header

    def add_auth(request, string_to_sign):
        seen.append(string_to_sign)
        return orig_add(request, string_to_sign)

    policy._add_authorization_header = add_auth
    # ... and via the module-level sign_string the policy actually calls.
    with SignCapture(sk_auth) as cap:
        policy.on_request(pipeline_request)

    assert len(seen) == 1 and len(cap.calls) == 1, (seen, cap.calls)
    assert seen[0] == cap.calls[0][0]
    after = list(http_request.headers.items())
    auth = http_request.headers["Authorization"]
    after_wo_auth = [(k, v) for k, v in after if k.lower() != "authorization"]
    assert before == [tuple(h) for h in headers], ("SDK changed headers at construction", before)
    return seen[0], auth, cap.calls[0][1], after_wo_auth


def shared_key_case(name, account, key, method, url, extra):
    headers = BASE_HEADERS + extra
    sts, auth, sig, after = sign_shared_key(RestHttpRequest, account, key, method, url, headers)
    # Cross-check: the legacy transport HttpRequest must give the same answer.
    sts2, auth2, _, _ = sign_shared_key(LegacyHttpRequest, account, key, method, url, headers)
    assert (sts, auth) == (sts2, auth2), (name, sts, sts2)
    # Sanity: Authorization is "SharedKey account:HMAC-SHA256(key, sts)".
    assert auth == "SharedKey %s:%s" % (account, sig)
    assert sig == hmac_b64(key, sts)
    case = {
        "name": name,
        "kind": "shared_key",
        "account": account,
        "key": key,
        "method": method,
        "url": url,
        "headers": [list(h) for h in headers],
        "string_to_sign": sts,
        "authorization": auth,
        "signature": sig,
    }
    if after != [tuple(h) for h in headers]:
        # The SDK added/changed headers; record what was actually sent/signed.
        case["final_headers"] = [list(h) for h in after]
    return case


def sas_case(name, account, key, container, blob, permission, start, expiry, protocol, pin=None):
    kwargs = {}
    if protocol is not None:
        kwargs["protocol"] = protocol
    hooked = []
    # generate_blob_sas has no public parameter for the signed version (sv); it
    # always uses the module-level X_MS_VERSION (newest supported). For the
    # pinned variants we temporarily swap that constant so that the very same
    # public function emits sv=<pin>.
    orig_ver = blob_sas_mod.X_MS_VERSION
    if pin is not None:
        blob_sas_mod.X_MS_VERSION = pin
    try:
        with SignCapture(blob_sas_mod) as cap:
            token = azure.storage.blob.generate_blob_sas(
                account_name=account,
                container_name=container,
                blob_name=blob,
                account_key=key,
                permission=permission,
                expiry=expiry,
                start=start,
                sts_hook=hooked.append,
                **kwargs,
            )
    finally:
        blob_sas_mod.X_MS_VERSION = orig_ver
    assert len(cap.calls) == 1 and hooked == [cap.calls[0][0]], (cap.calls, hooked)
    sts, sig = cap.calls[0]
    assert sig == hmac_b64(key, sts)
    used_version = dict(p.split("=", 1) for p in token.split("&"))["sv"]
    if pin is not None:
        assert used_version == pin
    return {
        "name": name,
        "kind": "sas",
        "account": account,
        "key": key,
        "container": container,
        "blob": blob,
        "permission": permission,
        "start": iso(start),
        "expiry": iso(expiry),
        "protocol": protocol,
        "version": used_version,
        "version_pinned": pin is not None,
        "string_to_sign": sts,
        "sas_query": token,
        "signature": sig,
    }


def main():
    blob_ver = pkg_version("azure-storage-blob")
    core_ver = pkg_version("azure-core")
    cases = [shared_key_case(*c) for c in SHARED_KEY_CASES]
    cases += [sas_case(*c) for c in SAS_CASES]
    cases += [sas_case(c[0] + "_sv2021_08_06", *c[1:], pin=PINNED_SAS_VERSION) for c in SAS_CASES]

    out = {
        "sdk": "azure-storage-blob %s / azure-core %s" % (blob_ver, core_ver),
        "generated_by": "azure/tests/vectors/generate.py",
        "notes": [
            "Shared Key: produced by azure.storage.blob._shared.authentication."
            "SharedKeyCredentialPolicy.on_request on an azure.core.rest.HttpRequest "
            "(cross-checked against azure.core.pipeline.transport.HttpRequest). "
            "Only the Authorization header is added; no other headers are added or changed.",
            "SAS: produced by azure.storage.blob.generate_blob_sas. It has no parameter "
            "to pin the signed version, so cases without suffix use the SDK default "
            "version (see each case's 'version'); '*_sv2021_08_06' cases are the same "
            "call with the SDK's X_MS_VERSION constant temporarily set to 2021-08-06.",
        ],
        "cases": cases,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shared_key.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
