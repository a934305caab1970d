//! Signed, short-lived tokens: claims, the signer, and their errors.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::id::{is_valid_sandbox_id, MAX_SANDBOX_ID_LEN};

type HmacSha256 = Hmac<Sha256>;

/// The shortest signing key accepted, in bytes (the output size of SHA-256).
pub const MIN_KEY_LEN: usize = 32;

/// Format version, the first byte of every payload: 1 without a subject, 2 with one.
const VERSION: u8 = 1;
/// Format version of a token that carries a subject (a length byte and the subject follow the id).
const VERSION_SUBJECT: u8 = 2;
/// The longest subject a token may carry, in bytes.
pub const MAX_SUBJECT_LEN: usize = 128;
/// Random bytes in every token.
const NONCE_LEN: usize = 16;
/// HMAC-SHA256 output.
const TAG_LEN: usize = 32;
/// version + audience + expiry (u64 ms) + nonce + id length.
const HEADER_LEN: usize = 1 + 1 + 8 + NONCE_LEN + 1;
/// The most upstream names an API token may carry.
pub const MAX_API_UPSTREAMS: usize = 16;
/// The longest upstream name an API token may carry, in bytes.
const MAX_UPSTREAM_NAME_LEN: usize = 64;
/// An API token's upstream list: a count, then each name with its length.
const MAX_UPSTREAMS_LEN: usize = 1 + MAX_API_UPSTREAMS * (1 + MAX_UPSTREAM_NAME_LEN);
/// The longest encoded token: anything longer is refused before decoding.
const MAX_TOKEN_CHARS: usize =
    (HEADER_LEN + MAX_SANDBOX_ID_LEN + 1 + MAX_SUBJECT_LEN + MAX_UPSTREAMS_LEN + TAG_LEN)
        .div_ceil(3)
        * 4;

/// Whether `subject` can be carried by a token: 1 to [`MAX_SUBJECT_LEN`] bytes of visible ASCII
/// (a user id, an e-mail address, a UUID).
fn is_valid_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.len() <= MAX_SUBJECT_LEN
        && subject.bytes().all(|b| b.is_ascii_graphic())
}

/// What a token may be used for. A token is only accepted where its audience is expected, so a
/// session cookie can never be replayed as a bootstrap link, nor an IDE token used as an API
/// token, or the other way round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Audience {
    /// A single-use link token, spent by [`Bootstrap`](super::Bootstrap).
    Bootstrap,
    /// The value of the tunnel cookie, checked by [`TunnelAuthLayer`](super::TunnelAuthLayer).
    Cookie,
    /// A caller's key for the API forwarder, issued by [`TokenSigner::issue_api`] and checked by
    /// [`TokenSigner::verify_api`]: it names a subject and the upstreams it may use.
    Api,
}

impl Audience {
    fn to_byte(self) -> u8 {
        match self {
            Audience::Bootstrap => 1,
            Audience::Cookie => 2,
            Audience::Api => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Audience::Bootstrap),
            2 => Some(Audience::Cookie),
            3 => Some(Audience::Api),
            _ => None,
        }
    }
}

/// The verified content of a token.
///
/// [`TunnelAuth`](super::TunnelAuth) inserts the `Claims` of the session cookie into the request
/// extensions, so inner services can read which sandbox the request was admitted for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    sandbox_id: String,
    subject: Option<String>,
    audience: Audience,
    expires_at_ms: u64,
    nonce: [u8; NONCE_LEN],
}

impl Claims {
    /// The sandbox this token opens.
    pub fn sandbox_id(&self) -> &str {
        &self.sandbox_id
    }

    /// The subject the token was issued for (the host's user id), when it carries one: see
    /// [`TokenSigner::issue_for`] and [`BootstrapBuilder::check_subject`](super::BootstrapBuilder::check_subject).
    /// The session cookie made from a link carries the link's subject.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// What the token may be used for.
    pub fn audience(&self) -> Audience {
        self.audience
    }

    /// When the token stops being accepted (millisecond precision).
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.expires_at_ms)
    }

    /// The token's random nonce, the key under which a spent token is remembered.
    pub fn nonce(&self) -> &[u8] {
        &self.nonce
    }
}

/// The verified content of an API token ([`Audience::Api`]): who the caller is and which
/// upstreams of the forwarder it may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiClaims {
    subject: String,
    upstreams: Vec<String>,
    expires_at_ms: u64,
}

impl ApiClaims {
    /// The caller the token was issued to (a user, an app, a project: the host decides); quotas
    /// are counted per subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The upstream names the token may be used for.
    pub fn upstreams(&self) -> &[String] {
        &self.upstreams
    }

    /// Whether the token may be used for the upstream called `name`.
    pub fn allows(&self, name: &str) -> bool {
        self.upstreams.iter().any(|u| u == name)
    }

    /// When the token stops being accepted (millisecond precision).
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.expires_at_ms)
    }
}

/// A signing key was refused when the signer was built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is shorter than [`MIN_KEY_LEN`] bytes.
    #[error("signing key is {len} bytes long; at least {min} bytes are required")]
    TooShort {
        /// Length of the key given.
        len: usize,
        /// The minimum, [`MIN_KEY_LEN`].
        min: usize,
    },
}

/// A token could not be issued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The sandbox id is empty, too long, or has characters outside `A-Z a-z 0-9 _ -`.
    #[error("invalid sandbox id (1 to 64 characters of A-Z a-z 0-9 _ - expected)")]
    InvalidSandboxId,
    /// The subject is empty, longer than [`MAX_SUBJECT_LEN`] bytes, or not visible ASCII.
    #[error("invalid subject (1 to 128 bytes of visible ASCII expected)")]
    InvalidSubject,
    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Randomness(getrandom::Error),
    /// An API token's upstream list is empty, longer than [`MAX_API_UPSTREAMS`], or holds a name
    /// that is not 1 to 64 characters of `A-Z a-z 0-9 _ - .` (or is `.` or `..`).
    #[error(
        "invalid upstream list (1 to 16 names of 1 to 64 characters of A-Z a-z 0-9 _ - . expected)"
    )]
    InvalidUpstreams,
}

/// Why a token was refused.
///
/// The variants are for the gateway's own logic and logs; the HTTP answers of
/// [`Bootstrap`](super::Bootstrap) and [`TunnelAuth`](super::TunnelAuth) only tell the user whether
/// the link expired, was already used, or is otherwise not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a token of this format: bad encoding, bad length, unknown version or fields.
    #[error("token is malformed")]
    Malformed,
    /// The signature matches none of the signer's keys.
    #[error("token signature does not verify")]
    BadSignature,
    /// The token was issued for another sandbox.
    #[error("token was issued for another sandbox")]
    WrongSandbox,
    /// The token was issued for another use (a cookie offered as a link or the reverse).
    #[error("token was issued for another use")]
    WrongAudience,
    /// The token's expiry has passed.
    #[error("token has expired")]
    Expired,
    /// The single-use token was already spent.
    #[error("token has already been used")]
    Replayed,
    /// The session was revoked ([`RevocationStore`](super::RevocationStore)).
    #[error("session has been revoked")]
    Revoked,
}

/// Signs and verifies tokens with HMAC-SHA256.
///
/// A token carries [`Claims`]: the sandbox id, the [`Audience`], an expiry and a random nonce,
/// followed by the HMAC-SHA256 tag of all of it, encoded as one URL-safe base64 string without
/// padding (so it needs no escaping in a query string or a cookie value).
///
/// Tokens are signed with the current key and verified against the current key and any previous
/// keys, so keys can be rotated without cutting open sessions: deploy the new key with the old
/// one as previous, and drop the old one once the longest-lived token signed with it has expired.
/// At run time, [`rotate`](Self::rotate) and [`remove_previous_keys`](Self::remove_previous_keys)
/// change the keys of this signer and of every clone of it. Every key must be at least [`MIN_KEY_LEN`] bytes; use random bytes, not a password.
///
/// Tags are compared in constant time. The signer never logs, and its `Debug` output never shows
/// the keys.
///
/// ```
/// use std::time::Duration;
/// use sandbox_gateway::auth::{Audience, TokenSigner};
///
/// let signer = TokenSigner::new([7u8; 32])?;
/// let token = signer.issue("demo", Duration::from_secs(60))?;
/// let claims = signer.verify(&token, "demo", Audience::Bootstrap)?;
/// assert_eq!(claims.sandbox_id(), "demo");
/// assert!(signer.verify(&token, "other", Audience::Bootstrap).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TokenSigner {
    keys: Arc<KeyRing>,
}

/// The keys, replaceable at run time by every clone of one signer, and a counter of changes.
struct KeyRing {
    keys: std::sync::RwLock<Keys>,
    changes: tokio::sync::watch::Sender<u64>,
}

impl KeyRing {
    fn new(keys: Keys) -> Arc<Self> {
        Arc::new(KeyRing {
            keys: std::sync::RwLock::new(keys),
            changes: tokio::sync::watch::channel(0).0,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        // Every write replaces the whole set in one step: consistent after a panic elsewhere.
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone)]
struct Keys {
    current: HmacSha256,
    previous: Vec<HmacSha256>,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("keys", &"<redacted>")
            .field("previous_keys", &self.keys.read().previous.len())
            .finish()
    }
}

fn keyed(key: &[u8]) -> Result<HmacSha256, KeyError> {
    if key.len() < MIN_KEY_LEN {
        return Err(KeyError::TooShort {
            len: key.len(),
            min: MIN_KEY_LEN,
        });
    }
    Ok(HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length"))
}

/// Compares two tags in constant time (for equal lengths; lengths are public).
fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

fn unix_ms(t: SystemTime) -> u64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        Err(_) => 0,
    }
}

impl TokenSigner {
    /// A signer with one key, used to sign and verify.
    ///
    /// Fails with [`KeyError::TooShort`] when the key is shorter than [`MIN_KEY_LEN`] bytes.
    pub fn new(key: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        Ok(Self {
            keys: KeyRing::new(Keys {
                current: keyed(key.as_ref())?,
                previous: Vec::new(),
            }),
        })
    }

    /// A signer with a fresh random key of [`MIN_KEY_LEN`] bytes from the operating system.
    ///
    /// Right for a single gateway process: its tokens and cookies end when it restarts. Replicas
    /// that verify each other's tokens need one shared key: use [`new`](Self::new).
    pub fn random() -> Result<Self, IssueError> {
        let mut key = [0u8; MIN_KEY_LEN];
        getrandom::fill(&mut key).map_err(IssueError::Randomness)?;
        let signer =
            Self::new(key).map_err(|_| IssueError::Randomness(getrandom::Error::UNEXPECTED));
        key.fill(0);
        signer
    }

    /// Adds a previous key: tokens signed with it still verify, new tokens are signed with the
    /// current key. Call once per retired key that may still have live tokens.
    pub fn with_previous_key(self, key: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let mac = keyed(key.as_ref())?;
        // A new signer: clones of `self` keep their keys.
        let mut keys = self.keys.read().clone();
        keys.previous.push(mac);
        Ok(Self {
            keys: KeyRing::new(keys),
        })
    }

    /// At run time, for this signer and every clone of it (the bootstrap's, the tunnel guard's):
    /// signs with `key` from now on and keeps the current key as a previous one.
    pub fn rotate(&self, key: impl AsRef<[u8]>) -> Result<(), KeyError> {
        let mac = keyed(key.as_ref())?;
        {
            let mut keys = self.keys.keys.write().unwrap_or_else(|e| e.into_inner());
            let old = std::mem::replace(&mut keys.current, mac);
            keys.previous.insert(0, old);
        }
        self.keys.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// At run time, for this signer and every clone of it: removes every previous key. Tokens
    /// signed with them no longer verify, and tunnels whose session was signed with one are
    /// closed ([`TunnelAuth`](super::TunnelAuth) re-checks them on [`changes`](Self::changes)).
    pub fn remove_previous_keys(&self) {
        self.keys
            .keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .previous
            .clear();
        self.keys.changes.send_modify(|n| *n += 1);
    }

    /// A counter bumped by each [`rotate`](Self::rotate) and
    /// [`remove_previous_keys`](Self::remove_previous_keys).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.keys.changes.subscribe()
    }

    /// Issues a single-use bootstrap token for sandbox `id`, valid for `ttl`.
    ///
    /// This is what the host's own authenticated route (for example `POST /api/dev/{id}/ide-token`)
    /// hands to the browser, usually as a URL built by [`bootstrap_url`](super::bootstrap_url).
    /// Keep `ttl` short (a minute is plenty): the token travels in a URL.
    pub fn issue(&self, id: &str, ttl: Duration) -> Result<String, IssueError> {
        self.sign(id, Audience::Bootstrap, ttl)
    }

    /// As [`issue`](Self::issue), for a token that also names the `subject` it was minted for
    /// (the host's user id, 1 to [`MAX_SUBJECT_LEN`] bytes of visible ASCII). The subject is
    /// signed with the rest; [`Bootstrap`](super::Bootstrap) hands it to its
    /// [`check_subject`](super::BootstrapBuilder::check_subject) hook and copies it into the
    /// session cookie, so inner services read it from [`Claims::subject`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use sandbox_gateway::auth::{Audience, TokenSigner};
    ///
    /// let signer = TokenSigner::new([7u8; 32])?;
    /// let token = signer.issue_for("demo", "user-42", Duration::from_secs(60))?;
    /// let claims = signer.verify(&token, "demo", Audience::Bootstrap)?;
    /// assert_eq!(claims.subject(), Some("user-42"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn issue_for(&self, id: &str, subject: &str, ttl: Duration) -> Result<String, IssueError> {
        self.sign_for(id, Some(subject), Audience::Bootstrap, ttl)
    }

    /// Signs a token for sandbox `id` with the given audience, valid for `ttl`.
    pub fn sign(&self, id: &str, audience: Audience, ttl: Duration) -> Result<String, IssueError> {
        self.sign_for(id, None, audience, ttl)
    }

    /// As [`sign`](Self::sign), carrying an optional subject (see [`issue_for`](Self::issue_for)).
    pub fn sign_for(
        &self,
        id: &str,
        subject: Option<&str>,
        audience: Audience,
        ttl: Duration,
    ) -> Result<String, IssueError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(IssueError::Randomness)?;
        self.sign_with(id, subject, audience, SystemTime::now() + ttl, nonce)
    }

    /// Issues an API token ([`Audience::Api`]) for the caller `subject`, valid for `ttl`, that
    /// may use the forwarder's upstreams named in `upstreams` and no other.
    ///
    /// The host's own authenticated route hands it to the app, which sends it where its SDK puts
    /// an API key (`Authorization: Bearer …`, `x-api-key`…). It is not single-use: keep `ttl` to
    /// the length of a working session (minutes to an hour) and issue a new one when it expires.
    /// `subject` follows the sandbox-id rules (1 to 64 characters of `A-Z a-z 0-9 _ -`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use sandbox_gateway::auth::TokenSigner;
    ///
    /// let signer = TokenSigner::new([7u8; 32])?;
    /// let token = signer.issue_api("user-42", ["openai"], Duration::from_secs(900))?;
    /// let claims = signer.verify_api(&token)?;
    /// assert_eq!(claims.subject(), "user-42");
    /// assert!(claims.allows("openai") && !claims.allows("anthropic"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn issue_api<I, S>(
        &self,
        subject: &str,
        upstreams: I,
        ttl: Duration,
    ) -> Result<String, IssueError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = vec![0u8];
        for name in upstreams {
            let name = name.as_ref();
            if !crate::util::valid_upstream_name(name)
                || name.len() > MAX_UPSTREAM_NAME_LEN
                || usize::from(list[0]) == MAX_API_UPSTREAMS
            {
                return Err(IssueError::InvalidUpstreams);
            }
            list[0] += 1;
            list.push(name.len() as u8);
            list.extend_from_slice(name.as_bytes());
        }
        if list[0] == 0 {
            return Err(IssueError::InvalidUpstreams);
        }
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(IssueError::Randomness)?;
        self.sign_raw(
            subject,
            None,
            Audience::Api,
            SystemTime::now() + ttl,
            nonce,
            &list,
        )
    }

    /// Verifies an API token ([`Audience::Api`]) against the current time: signature, audience
    /// and expiry. Tokens of any other audience (an IDE link, a tunnel cookie) are refused with
    /// [`TokenError::WrongAudience`], and API tokens are refused everywhere else.
    pub fn verify_api(&self, token: &str) -> Result<ApiClaims, TokenError> {
        self.verify_api_at(token, SystemTime::now())
    }

    /// As [`verify_api`](Self::verify_api), at a given time.
    pub fn verify_api_at(&self, token: &str, now: SystemTime) -> Result<ApiClaims, TokenError> {
        let (claims, upstreams) = self.decode(token)?;
        if claims.audience != Audience::Api {
            return Err(TokenError::WrongAudience);
        }
        if unix_ms(now) >= claims.expires_at_ms {
            return Err(TokenError::Expired);
        }
        Ok(ApiClaims {
            subject: claims.sandbox_id,
            upstreams,
            expires_at_ms: claims.expires_at_ms,
        })
    }

    fn sign_with(
        &self,
        id: &str,
        subject: Option<&str>,
        audience: Audience,
        expires_at: SystemTime,
        nonce: [u8; NONCE_LEN],
    ) -> Result<String, IssueError> {
        if audience == Audience::Api {
            // API tokens carry their upstream list: only `issue_api` makes them.
            return Err(IssueError::InvalidUpstreams);
        }
        self.sign_raw(id, subject, audience, expires_at, nonce, &[])
    }

    /// Signs the payload: the header, the id, the subject when there is one (format version 2),
    /// then `tail` (an API token's upstream list).
    fn sign_raw(
        &self,
        id: &str,
        subject: Option<&str>,
        audience: Audience,
        expires_at: SystemTime,
        nonce: [u8; NONCE_LEN],
        tail: &[u8],
    ) -> Result<String, IssueError> {
        if !is_valid_sandbox_id(id) {
            return Err(IssueError::InvalidSandboxId);
        }
        if subject.is_some_and(|s| !is_valid_subject(s)) {
            return Err(IssueError::InvalidSubject);
        }
        let mut buf =
            Vec::with_capacity(HEADER_LEN + id.len() + 1 + MAX_SUBJECT_LEN + tail.len() + TAG_LEN);
        buf.push(if subject.is_some() {
            VERSION_SUBJECT
        } else {
            VERSION
        });
        buf.push(audience.to_byte());
        buf.extend_from_slice(&unix_ms(expires_at).to_be_bytes());
        buf.extend_from_slice(&nonce);
        // `is_valid_sandbox_id` bounds the length to 64.
        buf.push(id.len() as u8);
        buf.extend_from_slice(id.as_bytes());
        if let Some(subject) = subject {
            // `is_valid_subject` bounds the length to 128.
            buf.push(subject.len() as u8);
            buf.extend_from_slice(subject.as_bytes());
        }
        buf.extend_from_slice(tail);
        let mut mac = self.keys.read().current.clone();
        mac.update(&buf);
        buf.extend_from_slice(&mac.finalize().into_bytes());
        Ok(URL_SAFE_NO_PAD.encode(&buf))
    }

    /// Verifies `token` for sandbox `id` and `audience` against the current time.
    ///
    /// Checks, in order: encoding and length, the signature (current key, then previous keys),
    /// the format, the audience, the sandbox id, the expiry. It does not check single use: that is
    /// the [`NonceStore`](super::NonceStore)'s job, done by [`Bootstrap`](super::Bootstrap).
    pub fn verify(&self, token: &str, id: &str, audience: Audience) -> Result<Claims, TokenError> {
        self.verify_at(token, id, audience, SystemTime::now())
    }

    /// As [`verify`](Self::verify), at a given time.
    pub fn verify_at(
        &self,
        token: &str,
        id: &str,
        audience: Audience,
        now: SystemTime,
    ) -> Result<Claims, TokenError> {
        let (claims, _) = self.decode(token)?;
        if claims.audience != audience {
            return Err(TokenError::WrongAudience);
        }
        if claims.sandbox_id != id {
            return Err(TokenError::WrongSandbox);
        }
        if unix_ms(now) >= claims.expires_at_ms {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Checks the encoding and the signature, then reads the claims (and an API token's
    /// upstream list).
    fn decode(&self, token: &str) -> Result<(Claims, Vec<String>), TokenError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token.as_bytes())
            .map_err(|_| TokenError::Malformed)?;
        if bytes.len() < HEADER_LEN + 1 + TAG_LEN {
            return Err(TokenError::Malformed);
        }
        let (payload, tag) = bytes.split_at(bytes.len() - TAG_LEN);

        let mut valid = false;
        let keys = self.keys.read();
        for key in std::iter::once(&keys.current).chain(&keys.previous) {
            let mut mac = key.clone();
            mac.update(payload);
            // No early exit: every key is tried whichever matches.
            valid |= tags_equal(&mac.finalize().into_bytes(), tag);
        }
        if !valid {
            return Err(TokenError::BadSignature);
        }

        let with_subject = match payload[0] {
            VERSION => false,
            VERSION_SUBJECT => true,
            _ => return Err(TokenError::Malformed),
        };
        let audience = Audience::from_byte(payload[1]).ok_or(TokenError::Malformed)?;
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&payload[2..10]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&payload[10..10 + NONCE_LEN]);
        let id_len = usize::from(payload[HEADER_LEN - 1]);
        let rest = &payload[HEADER_LEN..];
        if rest.len() < id_len {
            return Err(TokenError::Malformed);
        }
        let (id, tail) = rest.split_at(id_len);
        let id = std::str::from_utf8(id).map_err(|_| TokenError::Malformed)?;
        if !is_valid_sandbox_id(id) {
            return Err(TokenError::Malformed);
        }
        let (subject, tail) = if with_subject {
            let (&len, rest) = tail.split_first().ok_or(TokenError::Malformed)?;
            let len = usize::from(len);
            if rest.len() < len {
                return Err(TokenError::Malformed);
            }
            let (subject, tail) = rest.split_at(len);
            let subject = std::str::from_utf8(subject).map_err(|_| TokenError::Malformed)?;
            if !is_valid_subject(subject) {
                return Err(TokenError::Malformed);
            }
            (Some(subject.to_owned()), tail)
        } else {
            (None, tail)
        };
        let upstreams = if audience == Audience::Api {
            read_upstreams(tail)?
        } else if tail.is_empty() {
            Vec::new()
        } else {
            return Err(TokenError::Malformed);
        };
        let claims = Claims {
            sandbox_id: id.to_owned(),
            subject,
            audience,
            expires_at_ms: u64::from_be_bytes(exp),
            nonce,
        };
        Ok((claims, upstreams))
    }
}

/// Reads an API token's upstream list: a count, then each name as a length and its bytes, and
/// nothing after.
fn read_upstreams(mut tail: &[u8]) -> Result<Vec<String>, TokenError> {
    let (&count, rest) = tail.split_first().ok_or(TokenError::Malformed)?;
    tail = rest;
    if count == 0 || usize::from(count) > MAX_API_UPSTREAMS {
        return Err(TokenError::Malformed);
    }
    let mut names = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let (&len, rest) = tail.split_first().ok_or(TokenError::Malformed)?;
        let len = usize::from(len);
        if rest.len() < len || len > MAX_UPSTREAM_NAME_LEN {
            return Err(TokenError::Malformed);
        }
        let (name, rest) = rest.split_at(len);
        let name = std::str::from_utf8(name).map_err(|_| TokenError::Malformed)?;
        if !crate::util::valid_upstream_name(name) {
            return Err(TokenError::Malformed);
        }
        names.push(name.to_owned());
        tail = rest;
    }
    if !tail.is_empty() {
        return Err(TokenError::Malformed);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [0x42; 32];
    const KEY2: [u8; 32] = [0x17; 32];
    const MIN: Duration = Duration::from_secs(60);

    fn signer() -> TokenSigner {
        TokenSigner::new(KEY).unwrap()
    }

    /// xorshift64*: a small deterministic generator so the fuzz-style tests are reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn round_trip() {
        let s = signer();
        let t = s.issue("demo", MIN).unwrap();
        let c = s.verify(&t, "demo", Audience::Bootstrap).unwrap();
        assert_eq!(c.sandbox_id(), "demo");
        assert_eq!(c.audience(), Audience::Bootstrap);
        assert!(c.expires_at() > SystemTime::now());
        assert_eq!(c.nonce().len(), NONCE_LEN);
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));

        let cookie = s.sign("demo", Audience::Cookie, MIN).unwrap();
        assert_eq!(
            s.verify(&cookie, "demo", Audience::Cookie)
                .unwrap()
                .audience(),
            Audience::Cookie
        );
    }

    #[test]
    fn nonces_differ() {
        let s = signer();
        let a = s.verify(&s.issue("x", MIN).unwrap(), "x", Audience::Bootstrap);
        let b = s.verify(&s.issue("x", MIN).unwrap(), "x", Audience::Bootstrap);
        assert_ne!(a.unwrap().nonce(), b.unwrap().nonce());
    }

    #[test]
    fn short_keys_refused() {
        assert_eq!(
            TokenSigner::new([0u8; 31]).unwrap_err(),
            KeyError::TooShort { len: 31, min: 32 }
        );
        assert!(TokenSigner::new(b"").is_err());
        assert!(signer().with_previous_key([1u8; 8]).is_err());
        assert!(TokenSigner::new([0u8; 64]).is_ok());
    }

    #[test]
    fn debug_hides_keys() {
        let dbg = format!("{:?}", signer());
        assert!(dbg.contains("redacted"));
        // The key is 0x42 = 66 repeated: no run of it may show.
        assert!(!dbg.contains("66, 66"), "{dbg}");
        assert!(!dbg.contains("4242"), "{dbg}");
    }

    #[test]
    fn invalid_ids_are_not_signed() {
        assert!(matches!(
            signer().issue("../x", MIN),
            Err(IssueError::InvalidSandboxId)
        ));
        assert!(matches!(
            signer().issue(&"a".repeat(65), MIN),
            Err(IssueError::InvalidSandboxId)
        ));
    }

    #[test]
    fn rotation() {
        let old = TokenSigner::new(KEY).unwrap();
        let rotated = TokenSigner::new(KEY2)
            .unwrap()
            .with_previous_key(KEY)
            .unwrap();
        let new_only = TokenSigner::new(KEY2).unwrap();

        let by_old = old.issue("a", MIN).unwrap();
        let by_rotated = rotated.issue("a", MIN).unwrap();
        assert!(rotated.verify(&by_old, "a", Audience::Bootstrap).is_ok());
        assert!(rotated
            .verify(&by_rotated, "a", Audience::Bootstrap)
            .is_ok());
        assert!(new_only
            .verify(&by_rotated, "a", Audience::Bootstrap)
            .is_ok());
        // The old key alone does not know tokens signed with the new one.
        assert_eq!(
            old.verify(&by_rotated, "a", Audience::Bootstrap),
            Err(TokenError::BadSignature)
        );
        // Once the old key is dropped, its tokens stop verifying.
        assert_eq!(
            new_only.verify(&by_old, "a", Audience::Bootstrap),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn expiry() {
        let s = signer();
        let t = s.issue("a", MIN).unwrap();
        let now = SystemTime::now();
        assert!(s.verify_at(&t, "a", Audience::Bootstrap, now).is_ok());
        assert_eq!(
            s.verify_at(&t, "a", Audience::Bootstrap, now + 2 * MIN),
            Err(TokenError::Expired)
        );
        let at = s
            .sign_with(
                "a",
                None,
                Audience::Bootstrap,
                UNIX_EPOCH + Duration::from_millis(5000),
                [0; 16],
            )
            .unwrap();
        let base = UNIX_EPOCH + Duration::from_millis(4999);
        assert!(s.verify_at(&at, "a", Audience::Bootstrap, base).is_ok());
        assert_eq!(
            s.verify_at(
                &at,
                "a",
                Audience::Bootstrap,
                base + Duration::from_millis(1)
            ),
            Err(TokenError::Expired)
        );
        let zero = s.issue("a", Duration::ZERO).unwrap();
        assert_eq!(
            s.verify(&zero, "a", Audience::Bootstrap),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn wrong_audience_and_sandbox() {
        let s = signer();
        let t = s.issue("a", MIN).unwrap();
        assert_eq!(
            s.verify(&t, "b", Audience::Bootstrap),
            Err(TokenError::WrongSandbox)
        );
        assert_eq!(
            s.verify(&t, "a", Audience::Cookie),
            Err(TokenError::WrongAudience)
        );
        // A sandbox id that is a prefix of the other is still another sandbox.
        let ab = s.issue("ab", MIN).unwrap();
        assert_eq!(
            s.verify(&ab, "a", Audience::Bootstrap),
            Err(TokenError::WrongSandbox)
        );
    }

    #[test]
    fn tampering_any_character_fails() {
        let s = signer();
        let t = s.issue("sandbox-1", MIN).unwrap();
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for i in 0..t.len() {
            for &c in alphabet.iter().chain(b"=.+/ ") {
                if c == t.as_bytes()[i] {
                    continue;
                }
                let mut b = t.clone().into_bytes();
                b[i] = c;
                let m = String::from_utf8(b).unwrap();
                let err = s.verify(&m, "sandbox-1", Audience::Bootstrap).unwrap_err();
                assert!(
                    matches!(err, TokenError::BadSignature | TokenError::Malformed),
                    "position {i}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn tampering_any_decoded_byte_fails() {
        let s = signer();
        let t = s.issue("sandbox-1", MIN).unwrap();
        let raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        for i in 0..raw.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = raw.clone();
                b[i] ^= flip;
                let m = URL_SAFE_NO_PAD.encode(&b);
                assert_eq!(
                    s.verify(&m, "sandbox-1", Audience::Bootstrap),
                    Err(TokenError::BadSignature),
                    "byte {i}"
                );
            }
        }
        // Truncated and extended tokens.
        for n in 0..t.len() {
            assert!(s.verify(&t[..n], "sandbox-1", Audience::Bootstrap).is_err());
        }
        assert!(s
            .verify(&format!("{t}A"), "sandbox-1", Audience::Bootstrap)
            .is_err());
    }

    #[test]
    fn signed_but_malformed_payloads_are_malformed() {
        // Payloads with a valid tag but a bad layout (as a holder of the key could make).
        let s = signer();
        let sign_raw = |payload: &[u8]| {
            let mut mac = s.keys.read().current.clone();
            mac.update(payload);
            let mut b = payload.to_vec();
            b.extend_from_slice(&mac.finalize().into_bytes());
            URL_SAFE_NO_PAD.encode(b)
        };
        let good = |version: u8, aud: u8, id: &[u8], len: u8| {
            let mut p = vec![version, aud];
            p.extend_from_slice(&u64::MAX.to_be_bytes());
            p.extend_from_slice(&[0; NONCE_LEN]);
            p.push(len);
            p.extend_from_slice(id);
            p
        };
        assert!(s
            .verify(&sign_raw(&good(1, 1, b"ok", 2)), "ok", Audience::Bootstrap)
            .is_ok());
        for p in [
            good(2, 1, b"ok", 2),
            good(1, 9, b"ok", 2),
            good(1, 1, b"ok", 3),
            good(1, 1, b"o/", 2),
            good(1, 1, &[0xff, 0xfe], 2),
            // Version 2 carries a subject: missing, empty, short, long or not visible ASCII.
            good(2, 1, b"ok\x00", 2),
            good(2, 1, b"ok\x03ab", 2),
            good(2, 1, b"ok\x01ab", 2),
            good(2, 1, b"ok\x01 ", 2),
        ] {
            assert_eq!(
                s.verify(&sign_raw(&p), "ok", Audience::Bootstrap),
                Err(TokenError::Malformed)
            );
        }
    }

    #[test]
    fn subjects_are_signed_and_bounded() {
        let s = signer();
        let t = s.issue_for("a", "user@example.com", MIN).unwrap();
        let c = s.verify(&t, "a", Audience::Bootstrap).unwrap();
        assert_eq!(c.subject(), Some("user@example.com"));
        assert_eq!(c.sandbox_id(), "a");
        assert_eq!(
            s.verify(&s.issue("a", MIN).unwrap(), "a", Audience::Bootstrap)
                .unwrap()
                .subject(),
            None
        );
        let longest = "u".repeat(MAX_SUBJECT_LEN);
        let t = s
            .sign_for(&"i".repeat(64), Some(&longest), Audience::Cookie, MIN)
            .unwrap();
        assert!(t.len() <= MAX_TOKEN_CHARS);
        assert_eq!(
            s.verify(&t, &"i".repeat(64), Audience::Cookie)
                .unwrap()
                .subject(),
            Some(longest.as_str())
        );
        for bad in ["", "a b", "é", &"u".repeat(MAX_SUBJECT_LEN + 1)] {
            assert!(
                matches!(s.issue_for("a", bad, MIN), Err(IssueError::InvalidSubject)),
                "{bad:?}"
            );
        }
        // Tampering with the subject breaks the signature.
        let t = s.issue_for("a", "alice", MIN).unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        let at = raw.len() - TAG_LEN - 1;
        raw[at] ^= 1;
        assert_eq!(
            s.verify(&URL_SAFE_NO_PAD.encode(raw), "a", Audience::Bootstrap),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tag_comparison_checks_the_length_and_every_byte() {
        // Timing cannot be measured reliably here; `tags_equal` gets it from
        // `subtle::ConstantTimeEq`. This pins what it compares: a difference at any position
        // and any length difference make the tags unequal.
        let tag: Vec<u8> = (0..32).collect();
        assert!(tags_equal(&tag, &tag.clone()));
        for i in 0..tag.len() {
            let mut other = tag.clone();
            other[i] ^= 0x01;
            assert!(
                !tags_equal(&tag, &other),
                "difference at byte {i} unnoticed"
            );
        }
        assert!(!tags_equal(&tag, &tag[..31]));
        assert!(!tags_equal(&tag[..31], &tag));
        assert!(!tags_equal(&[], &[0]));
        assert!(tags_equal(&[], &[]));
    }

    #[test]
    fn arbitrary_inputs_never_panic() {
        let s = TokenSigner::new(KEY)
            .unwrap()
            .with_previous_key(KEY2)
            .unwrap();
        let valid: Vec<String> = ["a", "sandbox-1", &"z".repeat(64)]
            .iter()
            .map(|id| s.issue(id, MIN).unwrap())
            .collect();
        let alphabet: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.% \0\xc3\xa9";
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut accepted = 0;
        for i in 0..20_000 {
            let input: Vec<u8> = match i % 4 {
                // Random bytes of any value.
                0 => (0..rng.below(200)).map(|_| rng.next() as u8).collect(),
                // Random strings over the token alphabet and a few intruders.
                1 => (0..rng.below(200))
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect(),
                // Mutations of valid tokens: replace, insert, delete, truncate.
                _ => {
                    let mut t = valid[rng.below(valid.len())].clone().into_bytes();
                    for _ in 0..=rng.below(4) {
                        match rng.below(4) {
                            0 if !t.is_empty() => {
                                let at = rng.below(t.len());
                                t[at] = alphabet[rng.below(alphabet.len())];
                            }
                            1 => {
                                let at = rng.below(t.len() + 1);
                                t.insert(at, alphabet[rng.below(alphabet.len())]);
                            }
                            2 if !t.is_empty() => {
                                t.remove(rng.below(t.len()));
                            }
                            _ => t.truncate(rng.below(t.len() + 1)),
                        }
                    }
                    t
                }
            };
            let input = String::from_utf8_lossy(&input);
            for aud in [Audience::Bootstrap, Audience::Cookie] {
                for id in ["a", "sandbox-1"] {
                    if s.verify(&input, id, aud).is_ok() {
                        accepted += 1;
                        // Only an unmodified valid token may pass.
                        assert!(valid.iter().any(|v| v == &*input));
                    }
                }
            }
        }
        // Some mutations are no-ops (truncate to full length); they must be the only passes.
        assert!(accepted < 20_000);
    }

    #[test]
    fn api_tokens_round_trip_and_keep_to_their_audience() {
        let s = signer();
        let t = s.issue_api("user-1", ["openai", "demo.llm"], MIN).unwrap();
        let c = s.verify_api(&t).unwrap();
        assert_eq!(c.subject(), "user-1");
        assert_eq!(c.upstreams(), ["openai", "demo.llm"]);
        assert!(c.allows("demo.llm") && !c.allows("demo"));
        assert!(c.expires_at() > SystemTime::now());
        // An API token is never an IDE link or a tunnel cookie, and the other way round.
        for aud in [Audience::Bootstrap, Audience::Cookie] {
            assert_eq!(s.verify(&t, "user-1", aud), Err(TokenError::WrongAudience));
        }
        let link = s.issue("user-1", MIN).unwrap();
        let cookie = s.sign("user-1", Audience::Cookie, MIN).unwrap();
        assert_eq!(s.verify_api(&link), Err(TokenError::WrongAudience));
        assert_eq!(s.verify_api(&cookie), Err(TokenError::WrongAudience));
        // `sign` cannot make an API token without its upstream list.
        assert!(matches!(
            s.sign("user-1", Audience::Api, MIN),
            Err(IssueError::InvalidUpstreams)
        ));
        // Expiry, and another key.
        assert_eq!(
            s.verify_api_at(&t, SystemTime::now() + 2 * MIN),
            Err(TokenError::Expired)
        );
        assert_eq!(
            TokenSigner::new(KEY2).unwrap().verify_api(&t),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn api_token_upstream_lists_are_checked() {
        let s = signer();
        let none: [&str; 0] = [];
        assert!(matches!(
            s.issue_api("u", none, MIN),
            Err(IssueError::InvalidUpstreams)
        ));
        for bad in ["", "..", "a/b", "a b"] {
            assert!(matches!(
                s.issue_api("u", [bad], MIN),
                Err(IssueError::InvalidUpstreams)
            ));
        }
        assert!(matches!(
            s.issue_api("u", [&"n".repeat(65)], MIN),
            Err(IssueError::InvalidUpstreams)
        ));
        let many: Vec<String> = (0..=MAX_API_UPSTREAMS).map(|i| format!("u{i}")).collect();
        assert!(matches!(
            s.issue_api("u", &many, MIN),
            Err(IssueError::InvalidUpstreams)
        ));
        // The longest token verifies (the length bound before decoding admits it).
        let longest: Vec<String> = (0..MAX_API_UPSTREAMS)
            .map(|i| format!("{i:0>64}"))
            .collect();
        let t = s.issue_api(&"s".repeat(64), &longest, MIN).unwrap();
        assert_eq!(
            s.verify_api(&t).unwrap().upstreams().len(),
            MAX_API_UPSTREAMS
        );
        assert!(matches!(
            s.issue_api("a/b", ["x"], MIN),
            Err(IssueError::InvalidSandboxId)
        ));
    }

    #[test]
    fn signed_but_malformed_api_payloads_are_malformed() {
        let s = signer();
        let sign_raw = |payload: &[u8]| {
            let mut mac = s.keys.read().current.clone();
            mac.update(payload);
            let mut b = payload.to_vec();
            b.extend_from_slice(&mac.finalize().into_bytes());
            URL_SAFE_NO_PAD.encode(b)
        };
        let with_tail = |aud: u8, tail: &[u8]| {
            let mut p = vec![1, aud];
            p.extend_from_slice(&u64::MAX.to_be_bytes());
            p.extend_from_slice(&[0; NONCE_LEN]);
            p.push(1);
            p.push(b'u');
            p.extend_from_slice(tail);
            p
        };
        assert!(s.verify_api(&sign_raw(&with_tail(3, b"\x01\x01a"))).is_ok());
        for tail in [
            &b""[..],
            b"\x00",
            b"\x01",
            b"\x01\x02a",
            b"\x01\x01a!",
            b"\x01\x01/",
            b"\x02\x01a",
            b"\x11\x01a",
        ] {
            assert_eq!(
                s.verify_api(&sign_raw(&with_tail(3, tail))),
                Err(TokenError::Malformed),
                "{tail:?}"
            );
        }
        // Other audiences carry nothing after the id.
        assert_eq!(
            s.verify(
                &sign_raw(&with_tail(1, b"\x01\x01a")),
                "u",
                Audience::Bootstrap
            ),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn random_signers_have_distinct_keys() {
        let a = TokenSigner::random().unwrap();
        let b = TokenSigner::random().unwrap();
        let token = a.issue("demo", Duration::from_secs(60)).unwrap();
        assert!(a.verify(&token, "demo", Audience::Bootstrap).is_ok());
        assert_eq!(
            b.verify(&token, "demo", Audience::Bootstrap).unwrap_err(),
            TokenError::BadSignature
        );
    }

    #[test]
    fn keys_rotate_and_retire_at_run_time_for_every_clone() {
        let signer = TokenSigner::new([1u8; 32]).unwrap();
        let guard = signer.clone();
        let mut changes = guard.changes();
        let old = signer
            .sign("demo", Audience::Cookie, Duration::from_secs(60))
            .unwrap();
        signer.rotate([2u8; 32]).unwrap();
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        let new = signer
            .sign("demo", Audience::Cookie, Duration::from_secs(60))
            .unwrap();
        // The clone signs with the new key and still verifies the old one.
        assert!(guard.verify(&old, "demo", Audience::Cookie).is_ok());
        assert!(TokenSigner::new([2u8; 32])
            .unwrap()
            .verify(&new, "demo", Audience::Cookie)
            .is_ok());
        guard.remove_previous_keys();
        assert!(changes.has_changed().unwrap());
        assert_eq!(
            signer.verify(&old, "demo", Audience::Cookie),
            Err(TokenError::BadSignature)
        );
        assert!(signer.verify(&new, "demo", Audience::Cookie).is_ok());
        // A signer built from it with `with_previous_key` is a new one: its own keys.
        let other = signer.clone().with_previous_key([1u8; 32]).unwrap();
        assert!(other.verify(&old, "demo", Audience::Cookie).is_ok());
        assert!(signer.verify(&old, "demo", Audience::Cookie).is_err());
        assert!(matches!(
            signer.rotate([0u8; 3]),
            Err(KeyError::TooShort { .. })
        ));
    }
}
