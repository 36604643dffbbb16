#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus: the security checklist's nasty inputs for
each fuzz target. Run from fuzz/corpus: python3 ../make_seed_corpus.py"""
import base64, json
def b(x): return base64.urlsafe_b64encode(x if isinstance(x,bytes) else json.dumps(x).encode()).rstrip(b'=').decode()
claims={"evaluationId":"eval","statusCode":200,"iat":1768213800}
dup = b'{"alg":"HS256","alg":"EdDSA","kid":"k"}'
sig64 = b(bytes(64))
tokens={
 "valid_shape": b({'alg':'EdDSA','kid':'k1'}) + "." + b(claims) + "." + sig64,
 "alg_none": b({'alg':'none','kid':'k1'}) + "." + b(claims) + ".",
 "alg_hs256": b({'alg':'HS256','kid':'k1'}) + "." + b(claims) + "." + b(bytes(32)),
 "header_jwk": b({'alg':'EdDSA','kid':'k1','jwk':{'kty':'OKP'}}) + "." + b(claims) + "." + sig64,
 "crit": b({'alg':'EdDSA','kid':'k1','crit':['exp']}) + "." + b(claims) + "." + sig64,
 "kid_number": b({'alg':'EdDSA','kid':7}) + "." + b(claims) + "." + sig64,
 "kid_traversal": b({'alg':'EdDSA','kid':'../../x'}) + "." + b(claims) + "." + sig64,
 "dup_header": b(dup) + "." + b(claims) + "." + sig64,
 "claims_array": b({'alg':'EdDSA','kid':'k1'}) + "." + b([1,2]) + "." + sig64,
 "status_string": b({'alg':'EdDSA','kid':'k1'}) + "." + b({'evaluationId':'eval','statusCode':'200','iat':1}) + "." + sig64,
 "jwe_five_parts": "a.b.c.d.e",
 "many_dots": "." * 2000,
 "deep_json": b(b'['*500) + ".e30.AAAA",
}
for name,t in tokens.items():
    open(f"token_parser/{name}",'w').write(t)
x="11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
jwks={
 "ed25519": {"kty":"OKP","crv":"Ed25519","x":x},
 "private_d": {"kty":"OKP","crv":"Ed25519","x":x,"d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"},
 "p256": {"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
 "padded": {"kty":"OKP","crv":"Ed25519","x":x+"="},
 "small_order": {"kty":"OKP","crv":"Ed25519","x":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
 "rsa": {"kty":"RSA","n":"sXch","e":"AQAB"},
 "key_ops_repeat": {"kty":"OKP","crv":"Ed25519","x":x,"key_ops":["verify","verify"]},
}
for name,j in jwks.items():
    open(f"jwk_validator/{name}",'w').write(json.dumps(j))
    open(f"register_body/{name}",'w').write(json.dumps({"jwks":{"keys":[j]},"keyId":"k"}))
open("jwk_validator/duplicate_member",'w').write('{"kty":"OKP","crv":"X25519","crv":"Ed25519","x":"%s"}' % x)
open("register_body/jwks_uri_private",'w').write(json.dumps({"jwksUri":"https://169.254.169.254/latest","keyId":"k"}))
open("register_body/both",'w').write(json.dumps({"jwksUri":"https://example.com/j","jwks":{"keys":[]},"keyId":"k"}))
