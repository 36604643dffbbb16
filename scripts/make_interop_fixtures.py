#!/usr/bin/env python3
"""Writes crates/domain/tests/fixtures/interop.json: tokens signed by an independent
JOSE implementation (PyJWT with the `cryptography` backend), one per supported curve,
with the public JWK that verifies each. The Rust tests verify them, and tampered copies.

Regenerate (needs PyPI):
    python3 -m venv .venv && .venv/bin/pip install pyjwt cryptography
    .venv/bin/python scripts/make_interop_fixtures.py
"""
import json
import pathlib

import cryptography
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

NOW = 1768213800  # 2026-01-12T10:30:00Z: the tests hold their clock here.

CASES = [
    ("EdDSA", lambda: ed25519.Ed25519PrivateKey.generate(), OKPAlgorithm),
    ("ES256", lambda: ec.generate_private_key(ec.SECP256R1()), ECAlgorithm),
    ("ES384", lambda: ec.generate_private_key(ec.SECP384R1()), ECAlgorithm),
    ("ES256K", lambda: ec.generate_private_key(ec.SECP256K1()), ECAlgorithm),
]


def main():
    cases = []
    for alg, make_key, algorithm in CASES:
        key = make_key()
        kid = f"py-{alg.lower()}"
        public = json.loads(algorithm.to_jwk(key.public_key()))
        public["kid"] = kid
        for status in (200, 403):
            evaluation_id = f"eval-{alg.lower()}-{status}"
            claims = {"evaluationId": evaluation_id, "statusCode": status, "iat": NOW, "exp": NOW + 600}
            token = jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
            cases.append(
                {"alg": alg, "jwk": public, "evaluationId": evaluation_id, "statusCode": status, "token": token}
            )
    out = {
        "generator": f"PyJWT {jwt.__version__} with cryptography {cryptography.__version__}",
        "now": NOW,
        "cases": cases,
    }
    path = pathlib.Path(__file__).resolve().parent.parent / "crates/domain/tests/fixtures/interop.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path} ({len(cases)} tokens)")


if __name__ == "__main__":
    main()
