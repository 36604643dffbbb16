//! Integrator tools: `keyward keygen` makes a signing key pair in the format keyward
//! accepts, and `keyward sign` makes a signed webhook response that verifies. They let
//! an enterprise try the whole flow before writing its own signer.

use std::io::Write as _;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use keyward_domain::json::parse_strict;
use keyward_domain::PublicJwk;
use serde_json::{json, Map, Value};

/// The algorithms `keygen` makes keys for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Alg {
    #[value(name = "EdDSA")]
    EdDsa,
    #[value(name = "ES256")]
    Es256,
    #[value(name = "ES384")]
    Es384,
    #[value(name = "ES256K")]
    Es256k,
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Es256k => "ES256K",
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness available: {e}"))?;
    Ok(bytes)
}

/// A fresh key on a RustCrypto curve: `(crv, kty, x, y, d)`. Random bytes that are not
/// a valid scalar (vanishingly rare) are drawn again.
macro_rules! ec_key {
    ($curve:ident, $crv:literal, $len:literal) => {{
        let key = loop {
            if let Ok(key) = $curve::SecretKey::from_slice(&random::<$len>()?) {
                break key;
            }
        };
        let point = $curve::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
            &key.public_key(),
            false,
        );
        let x = point.x().map(|v| v.to_vec()).unwrap_or_default();
        let y = point.y().map(|v| v.to_vec());
        ($crv, "EC", x, y, key.to_bytes().to_vec())
    }};
}

/// Signs `input` with the scalar `d` of a RustCrypto curve, in raw `r‖s` form.
macro_rules! ec_sign {
    ($curve:ident, $jwk:expr, $len:literal, $input:expr) => {{
        use $curve::ecdsa::signature::Signer as _;
        let key = $curve::ecdsa::SigningKey::from_slice(&scalar::<$len>($jwk)?)
            .map_err(|_| format!("the key file's 'd' is not a {} key", stringify!($curve)))?;
        let signature: $curve::ecdsa::Signature = key.sign($input);
        signature.to_bytes().to_vec()
    }};
}

/// A fresh private JWK for `alg`.
fn generate(alg: Alg, kid: &str) -> Result<Value, String> {
    let (crv, kty, x, y, d) = match alg {
        Alg::EdDsa => {
            let key = ed25519_dalek::SigningKey::from_bytes(&random::<32>()?);
            (
                "Ed25519",
                "OKP",
                key.verifying_key().to_bytes().to_vec(),
                None,
                key.to_bytes().to_vec(),
            )
        }
        Alg::Es256 => ec_key!(p256, "P-256", 32),
        Alg::Es384 => ec_key!(p384, "P-384", 48),
        Alg::Es256k => ec_key!(k256, "secp256k1", 32),
    };
    let mut jwk =
        json!({"kty": kty, "crv": crv, "x": b64(&x), "kid": kid, "alg": alg.name(), "use": "sig"});
    if let Some(y) = y {
        jwk["y"] = json!(b64(&y));
    }
    jwk["d"] = json!(b64(&d));
    Ok(jwk)
}

/// The public half of a private JWK, checked exactly as registration will check it.
fn public_of(private: &Map<String, Value>) -> Result<Value, String> {
    let mut public = private.clone();
    public.remove("d");
    PublicJwk::from_json(&public).map_err(|e| format!("the key is not acceptable: {e}"))?;
    Ok(Value::Object(public))
}

/// `keyward keygen`: writes the private JWK to `out` (mode 0600, never overwriting) and
/// returns the public JWKS to print.
pub fn keygen(alg: Alg, kid: &str, out: &Path) -> Result<String, String> {
    keyward_domain::KeyId::parse(kid).map_err(|e| e.to_string())?;
    let private = generate(alg, kid)?;
    let public = public_of(
        private
            .as_object()
            .ok_or("internal: key is not an object")?,
    )?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(out).map_err(|e| {
        format!(
            "cannot create {}: {e} (keygen never overwrites a key file)",
            out.display()
        )
    })?;
    file.write_all(format!("{private:#}\n").as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(format!("{:#}", json!({ "keys": [public] })))
}

fn member<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    jwk.get(name).and_then(Value::as_str).ok_or_else(|| {
        format!("the key file has no '{name}'; use a file written by 'keyward keygen'")
    })
}

fn scalar<const N: usize>(jwk: &Map<String, Value>) -> Result<[u8; N], String> {
    let d = URL_SAFE_NO_PAD
        .decode(member(jwk, "d")?)
        .map_err(|_| "the key file's 'd' is not base64url".to_owned())?;
    <[u8; N]>::try_from(d.as_slice()).map_err(|_| format!("the key file's 'd' is not {N} bytes"))
}

/// `keyward sign`: a compact JWS answering `evaluation_id` with `status_code`, issued
/// now and, with `ttl`, expiring that many seconds later.
pub fn sign(
    key_file: &Path,
    evaluation_id: &str,
    status_code: i64,
    ttl: Option<u64>,
) -> Result<String, String> {
    let text =
        std::fs::read(key_file).map_err(|e| format!("cannot read {}: {e}", key_file.display()))?;
    let Ok(Value::Object(jwk)) = parse_strict(&text) else {
        return Err(format!(
            "{} is not a JWK; use a file written by 'keyward keygen'",
            key_file.display()
        ));
    };
    public_of(&jwk)?;
    let kid = member(&jwk, "kid")?;
    let crv = member(&jwk, "crv")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| "the system clock is before 1970")?
        .as_secs();
    let mut claims = json!({"evaluationId": evaluation_id, "statusCode": status_code, "iat": now});
    if let Some(ttl) = ttl {
        claims["exp"] = json!(now + ttl);
    }
    let alg = match crv {
        "Ed25519" => "EdDSA",
        "P-256" => "ES256",
        "P-384" => "ES384",
        "secp256k1" => "ES256K",
        other => return Err(format!("the curve '{other}' cannot sign")),
    };
    let header = json!({"alg": alg, "kid": kid, "typ": "JWT"});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = match crv {
        "Ed25519" => {
            use ed25519_dalek::Signer as _;
            let key = ed25519_dalek::SigningKey::from_bytes(&scalar::<32>(&jwk)?);
            key.sign(input.as_bytes()).to_bytes().to_vec()
        }
        "P-256" => ec_sign!(p256, &jwk, 32, input.as_bytes()),
        "P-384" => ec_sign!(p384, &jwk, 48, input.as_bytes()),
        _ => ec_sign!(k256, &jwk, 32, input.as_bytes()),
    };
    Ok(format!("{input}.{}", b64(&signature)))
}
