#!/usr/bin/env python3
"""Check docpipe's result signatures without docpipe: an independent implementation of the
convention README describes ("Verifying docpipe output"), for a receiving authority.

    pip install rfc8785 cryptography
    python3 verify_offline.py results.jsonl signing.pub [more.pub ...]

Each line of the results file is a JSON result whose `signature` member holds an Ed25519
signature over the SHA-256 digest of the RFC 8785 canonical JSON of the result without that
member (scheme `ed25519-sha256-jcs`). Prints one verdict
per line and exits 1 if any result fails. (The manifest and originals checks are docpipe
verify's; this script is the signature check alone, written from the convention.)
"""
import base64
import hashlib
import json
import sys

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key


def key_id(key):
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def unique_members(pairs):
    """RFC 8785 needs I-JSON: a member named twice is refused (json.loads would keep the last)."""
    names = [name for name, _ in pairs]
    if len(names) != len(set(names)):
        raise ValueError("an object names a member twice")
    return dict(pairs)


def check(result, keys):
    """None when the result's signature verifies, else why not."""
    signature = result.pop("signature", None)
    if not isinstance(signature, dict) or signature.get("scheme") != "ed25519-sha256-jcs":
        return "not signed"
    key = keys.get(signature.get("key_id"))
    if key is None:
        return f"unknown key {str(signature.get('key_id'))[:16]!r}"
    digest = hashlib.sha256(rfc8785.dumps(result)).digest()
    try:
        key.verify(base64.b64decode(signature["value"], validate=True), digest)
    except InvalidSignature:
        return "signature does not match the content"
    return None


def main(results_path, key_paths):
    keys = {}
    for path in key_paths:
        with open(path, "rb") as f:
            key = load_pem_public_key(f.read())
        if not isinstance(key, Ed25519PublicKey):
            sys.exit(f"{path}: not an Ed25519 public key")
        keys[key_id(key)] = key
    failed = 0
    with open(results_path, "rb") as f:
        # Lines end at "\n" only: a result's text may hold U+2028, which splitlines() would cut at.
        for number, line in enumerate(f.read().split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                verdict = check(json.loads(line, object_pairs_hook=unique_members), keys)
            except Exception as e:  # a line that is not a result gets a verdict, not a crash
                verdict = f"unreadable ({type(e).__name__}: {e})"
            print(f"{'OK    ' if verdict is None else 'FAILED'} line {number}" + ("" if verdict is None else f": {verdict}"))
            failed += verdict is not None
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
