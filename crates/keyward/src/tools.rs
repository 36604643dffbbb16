//! Integrator tools: `keyward keygen` makes a signing key pair in the format keyward
//! accepts, and `keyward sign` makes a signed webhook response that verifies. They let
//! an enterprise try the whole flow before writing its own signer.

use std::io::Write as _;
use std::path::Path;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING};
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

/// A fresh key on a NIST curve, by aws-lc: `(crv, kty, x, y, d)`.
fn nist_key(
    alg: &'static aws_lc_rs::signature::EcdsaSigningAlgorithm,
    crv: &'static str,
    len: usize,
) -> Result<KeyParts, String> {
    use aws_lc_rs::encoding::AsBigEndian as _;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _};
    let pair = EcdsaKeyPair::generate(alg).map_err(|_| "could not generate a key".to_owned())?;
    let d = pair
        .private_key()
        .as_be_bytes()
        .map_err(|_| "could not export the key".to_owned())?;
    // Uncompressed SEC1: 0x04, then x and y.
    let point = pair.public_key().as_ref();
    Ok((
        crv,
        "EC",
        point[1..1 + len].to_vec(),
        Some(point[1 + len..].to_vec()),
        d.as_ref().to_vec(),
    ))
}

/// `(crv, kty, x, y, d)` of a fresh key.
type KeyParts = (
    &'static str,
    &'static str,
    Vec<u8>,
    Option<Vec<u8>>,
    Vec<u8>,
);

/// A fresh secp256k1 key.
fn secp256k1_key() -> Result<KeyParts, String> {
    let key = loop {
        if let Ok(key) = k256::ecdsa::SigningKey::from_slice(&random::<32>()?) {
            break key;
        }
    };
    let point = key.verifying_key().to_sec1_point(false);
    let point = point.as_bytes();
    Ok((
        "secp256k1",
        "EC",
        point[1..33].to_vec(),
        Some(point[33..].to_vec()),
        key.to_bytes().to_vec(),
    ))
}

/// Signs `input` with a NIST-curve private JWK, in raw `r‖s` form.
fn nist_sign(
    alg: &'static aws_lc_rs::signature::EcdsaSigningAlgorithm,
    jwk: &Map<String, Value>,
    input: &[u8],
) -> Result<Vec<u8>, String> {
    let coordinate = |name| {
        URL_SAFE_NO_PAD
            .decode(member(jwk, name)?)
            .map_err(|_| format!("the key file's '{name}' is not base64url"))
    };
    let mut public = vec![0x04];
    public.extend(coordinate("x")?);
    public.extend(coordinate("y")?);
    let pair = aws_lc_rs::signature::EcdsaKeyPair::from_private_key_and_public_key(
        alg,
        &coordinate("d")?,
        &public,
    )
    .map_err(|_| "the key file's 'd' does not match its public key".to_owned())?;
    pair.sign(&aws_lc_rs::rand::SystemRandom::new(), input)
        .map(|signature| signature.as_ref().to_vec())
        .map_err(|_| "could not sign".to_owned())
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
        Alg::Es256 => nist_key(&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32)?,
        Alg::Es384 => nist_key(&ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48)?,
        Alg::Es256k => secp256k1_key()?,
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
        "P-256" => nist_sign(&ECDSA_P256_SHA256_FIXED_SIGNING, &jwk, input.as_bytes())?,
        "P-384" => nist_sign(&ECDSA_P384_SHA384_FIXED_SIGNING, &jwk, input.as_bytes())?,
        _ => {
            use k256::ecdsa::signature::Signer as _;
            let key = k256::ecdsa::SigningKey::from_slice(&scalar::<32>(&jwk)?)
                .map_err(|_| "the key file's 'd' is not a secp256k1 key".to_owned())?;
            let signature: k256::ecdsa::Signature = key.sign(input.as_bytes());
            signature.to_bytes().to_vec()
        }
    };
    Ok(format!("{input}.{}", b64(&signature)))
}
