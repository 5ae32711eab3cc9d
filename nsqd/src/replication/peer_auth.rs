//! Peer-link authentication with a shared secret
//! (`--replication-secret-file`): each side sends a random challenge and
//! answers the other's with an HMAC-SHA256 over it, its role, and the
//! origin's identity and incarnation; answers are checked in constant time.
//! Both ends prove the secret: a node without it can neither feed a holder
//! records nor acknowledge (and so swallow) an origin's publishes.
//!
//! The exchange, on top of the Hello exchange (`holder.rs`, `origin.rs`):
//! holder `Auth{nonce_h}` → origin `Hello` + `Auth{nonce_o, proof_o}` →
//! holder checks proof_o, `Auth{proof_h}` → origin checks proof_h. A node
//! without a secret sends zero proofs and checks none (a trusted network).

use std::path::Path;

use ring::hmac;

/// Most bytes of a secret file (a secret, not a document).
const MAX_SECRET: u64 = 4096;

/// Which side computes a proof: a proof is never valid for the other role,
/// so one side's answer cannot be reflected back to it.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Origin,
    Holder,
}

/// Why a secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: a secret must hold 16 to {MAX_SECRET} bytes")]
    Size { path: String },
}

/// The shared secret, as an HMAC key.
pub struct PeerSecret(hmac::Key);

impl std::fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerSecret(..)")
    }
}

impl PeerSecret {
    /// Read the secret (surrounding whitespace ignored) from `path`.
    pub fn load(path: &Path) -> Result<PeerSecret, SecretError> {
        let named = || path.display().to_string();
        let read = |source| SecretError::Read {
            path: named(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > MAX_SECRET {
            return Err(SecretError::Size { path: named() });
        }
        let raw = std::fs::read(path).map_err(read)?;
        let secret = raw.trim_ascii();
        if secret.len() < 16 {
            return Err(SecretError::Size { path: named() });
        }
        Ok(PeerSecret::new(secret))
    }

    pub fn new(secret: &[u8]) -> PeerSecret {
        PeerSecret(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    fn message(c: &Claim) -> Vec<u8> {
        let mut m = b"nsq-rs replication peer v2 ".to_vec();
        m.push(match c.role {
            Role::Origin => b'O',
            Role::Holder => b'H',
        });
        m.extend_from_slice(c.nonce);
        m.extend_from_slice(&c.incarnation.to_be_bytes());
        m.extend_from_slice(c.origin.as_bytes());
        m
    }

    /// The answer `c` states.
    pub fn proof(&self, c: &Claim) -> [u8; 32] {
        let tag = hmac::sign(&self.0, &Self::message(c));
        let mut out = [0; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Whether `proof` answers `c` (constant time).
    pub fn verify(&self, c: &Claim, proof: &[u8; 32]) -> bool {
        hmac::verify(&self.0, &Self::message(c), proof).is_ok()
    }
}

/// What a proof vouches for: `role`'s answer to the other side's challenge
/// `nonce` on the link of `origin` (its identity and incarnation).
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub role: Role,
    pub nonce: &'a [u8; 32],
    pub origin: &'a str,
    pub incarnation: u64,
}

/// A fresh random challenge.
pub fn nonce() -> [u8; 32] {
    rand::random()
}

/// This side's answer, or zeros without a secret.
pub fn answer(secret: Option<&PeerSecret>, c: &Claim) -> [u8; 32] {
    secret.map_or([0; 32], |s| s.proof(c))
}

/// Whether the other side's answer is acceptable: always without a
/// secret here, else only a valid proof.
pub fn accepted(secret: Option<&PeerSecret>, c: &Claim, proof: &[u8; 32]) -> bool {
    match secret {
        None => true,
        Some(s) => s.verify(c, proof),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim<'a>(role: Role, nonce: &'a [u8; 32], origin: &'a str, incarnation: u64) -> Claim<'a> {
        Claim {
            role,
            nonce,
            origin,
            incarnation,
        }
    }

    #[test]
    fn proofs_bind_secret_role_nonce_and_origin() {
        let s = PeerSecret::new(b"0123456789abcdef");
        let n = [7; 32];
        let c = claim(Role::Origin, &n, "a:1", 5);
        let p = s.proof(&c);
        assert!(s.verify(&c, &p));
        assert!(
            !s.verify(&claim(Role::Holder, &n, "a:1", 5), &p),
            "reflected"
        );
        assert!(
            !s.verify(&claim(Role::Origin, &[8; 32], "a:1", 5), &p),
            "replayed"
        );
        assert!(!s.verify(&claim(Role::Origin, &n, "b:1", 5), &p));
        assert!(!s.verify(&claim(Role::Origin, &n, "a:1", 6), &p));
        let other = PeerSecret::new(b"fedcba9876543210");
        assert!(!other.verify(&c, &p));
        assert!(!accepted(Some(&s), &c, &[0; 32]));
        assert!(accepted(None, &c, &[0; 32]));
    }

    #[test]
    fn secret_files_are_bounded_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "short\n").unwrap();
        assert!(matches!(
            PeerSecret::load(&p),
            Err(SecretError::Size { .. })
        ));
        std::fs::write(&p, vec![b'x'; 5000]).unwrap();
        assert!(matches!(
            PeerSecret::load(&p),
            Err(SecretError::Size { .. })
        ));
        std::fs::write(&p, "0123456789abcdef\n").unwrap();
        let c = claim(Role::Holder, &[1; 32], "x", 1);
        let proof = PeerSecret::load(&p).unwrap().proof(&c);
        assert!(PeerSecret::new(b"0123456789abcdef").verify(&c, &proof));
    }
}
