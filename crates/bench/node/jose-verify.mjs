// Verifies keyward's benchmark tokens with the npm `jose` package, one at a time (one
// verification in flight, like the single-core rates it is compared with), and prints
// one JSON line per algorithm: {"alg", "perSecond"} or {"alg", "error"}.
//
// Usage: node jose-verify.mjs CASES.json
// CASES.json: {"seconds": 1, "cases": [{"alg": "EdDSA", "jwk": {...}, "token": "..."}]}
import { readFileSync } from "node:fs";
import { importJWK, jwtVerify } from "jose";

const { seconds, cases } = JSON.parse(readFileSync(process.argv[2], "utf8"));

for (const { alg, jwk, token } of cases) {
  try {
    const key = await importJWK(jwk, alg);
    const options = { algorithms: [alg] };
    await jwtVerify(token, key, options); // refuses a token it cannot verify
    const warm = performance.now() + 300;
    while (performance.now() < warm) await jwtVerify(token, key, options);
    let count = 0;
    const start = performance.now();
    const end = start + seconds * 1000;
    while (performance.now() < end) {
      for (let i = 0; i < 16; i++) await jwtVerify(token, key, options);
      count += 16;
    }
    const perSecond = count / ((performance.now() - start) / 1000);
    console.log(JSON.stringify({ alg, perSecond }));
  } catch (err) {
    console.log(JSON.stringify({ alg, error: String(err && err.message ? err.message : err) }));
  }
}
