#!/usr/bin/env python3
"""Writes crates/domain/tests/fixtures/interop.json: tokens signed by an independent
JOSE implementation (PyJWT with the `cryptography` backend), two per supported curve,
with the public JWK that verifies each. The Rust tests verify them, and tampered copies.
ECDSA signers may give either form of S (JWS does not ask for a low S), so each ECDSA
curve has one token of each: its 200 answer with a low S, its 403 answer with a high S.

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

# The order of each ECDSA curve's group: S is "high" above half of it.
ORDERS = {
    "ES256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "ES384": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973,
    "ES256K": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
}


def high_s(alg, token):
    """Whether the ECDSA token's signature has S above half the group order."""
    signature = jwt.utils.base64url_decode(token.rsplit(".", 1)[1])
    s = int.from_bytes(signature[len(signature) // 2 :], "big")
    return s > ORDERS[alg] // 2


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
            # ECDSA signing is randomized: sign again until S has the form wanted.
            while alg in ORDERS and high_s(alg, token) != (status == 403):
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
