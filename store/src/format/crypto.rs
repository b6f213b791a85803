//! Encryption: the one place where repository bytes are encrypted and
//! decrypted (FORMAT.md section 17). Owns the repository's key material
//! (the read key, its public half and the id key), the derivation of every
//! working key from it, the encrypted-object container and the cipher for
//! the pieces of a pack.
//!
//! It never decides which object is encrypted how beyond the fixed rule of
//! [`SealedKind`], never reads or writes storage, never checks signatures
//! (seal.rs does, on the bytes this module returns) and never sees a
//! passphrase (key slots, keyslot.rs, unwrap the key material).
//!
//! Every primitive comes from a well-kept crate: X25519 from
//! `x25519-dalek`, XChaCha20-Poly1305 from RustCrypto's `chacha20poly1305`,
//! AES-256-GCM (for packs, where the processor accelerates it) from `ring`,
//! key derivation from BLAKE3's `derive_key` mode.

use crate::error::{Result, StoreError};
use crate::id::{Id, IdHasher};
use crate::os::random::random_bytes;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};
use zeroize::Zeroize;

/// The scheme a config's `encryption.scheme` names (FORMAT.md 4, 17).
pub const SCHEME: &str = "x25519-xchacha20poly1305-blake3";
/// Starts every encrypted object that is not a pack.
pub const OBJECT_MAGIC: &[u8; 8] = b"CAIRNEN1";
/// The Poly1305 tag every sealed piece of bytes ends with.
pub const TAG_LENGTH: usize = 16;
/// Length of an XChaCha20 nonce.
pub const NONCE_LENGTH: usize = 24;

const BLOB_ID_CONTEXT: &str = "cairn 2026-12 blob id key v1";
const METADATA_CONTEXT: &str = "cairn 2026-12 metadata key v1";
const OBJECT_CONTEXT: &str = "cairn 2026-12 object key v1";
const PACK_CONTEXT: &str = "cairn 2026-12 pack key v1";
const PACK_CONTEXT_AES: &str = "cairn 2026-12 pack key v2 aes-256-gcm";
const OBJECT_AAD_PREFIX: &[u8] = b"cairn object v1\0";
const PIECE_AAD_PREFIX: &[u8] = b"cairn pack piece v1\0";
const HEADER_AAD_PREFIX: &[u8] = b"cairn pack header v1\0";

/// The X25519 public half of the read key: what a writer encrypts to.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EncryptionPublicKey(pub [u8; 32]);

impl EncryptionPublicKey {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        Some(EncryptionPublicKey(bytes.try_into().ok()?))
    }
}

impl std::fmt::Debug for EncryptionPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptionPublicKey({})", &self.to_hex()[..16])
    }
}

/// Which key an encrypted object is sealed under. Fixed per kind by the
/// format ([`SealedKind::sealing`]): a reader never takes the mode from the
/// object's own bytes on trust.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sealing {
    /// To the read key (mode 1): only a holder of the read key decrypts.
    ToReadKey,
    /// Under the metadata key, derived from the id key (mode 2): every
    /// writer decrypts, since it must deduplicate and must see deletion
    /// marks.
    Metadata,
}

impl Sealing {
    fn mode(self) -> u8 {
        match self {
            Sealing::ToReadKey => 1,
            Sealing::Metadata => 2,
        }
    }
}

/// The kinds of object stored in the encrypted-object container, each
/// with its fixed sealing and the name the associated data binds it to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealedKind {
    Index,
    Deletion,
    Snapshot,
    Forget,
    Keyring,
    Annotation,
}

impl SealedKind {
    /// The name bound into the associated data (FORMAT.md 17.4).
    pub fn aad_name(self) -> &'static str {
        match self {
            SealedKind::Index => "index",
            SealedKind::Deletion => "deletion",
            SealedKind::Snapshot => "snapshot",
            SealedKind::Forget => "forget",
            SealedKind::Keyring => "keyring",
            SealedKind::Annotation => "annotation",
        }
    }

    pub fn sealing(self) -> Sealing {
        match self {
            SealedKind::Index | SealedKind::Deletion => Sealing::Metadata,
            SealedKind::Snapshot
            | SealedKind::Forget
            | SealedKind::Keyring
            | SealedKind::Annotation => Sealing::ToReadKey,
        }
    }
}

/// 32 secret bytes, wiped when dropped, never printed.
#[derive(Clone)]
struct Secret([u8; 32]);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// A repository's key material, or the write-only part of it.
///
/// - the *id key* (32 random bytes) names blobs and seals what every writer
///   must read (index files, deletion marks);
/// - the *read key* (an X25519 secret) opens everything else; writers
///   encrypt to its public half, so a host without it cannot read what it
///   or anyone else wrote.
pub struct RepositoryKeys {
    repository: Id,
    public: EncryptionPublicKey,
    id_key: Secret,
    read: Option<StaticSecret>,
    /// The public halves of the read keys before rotations (FORMAT.md
    /// 17.7), newest first; the oldest is the one the config names.
    earlier_public: Vec<EncryptionPublicKey>,
    /// Those read keys, in the same order (empty in write-only keys): what
    /// was written to them stays readable.
    earlier_read: Vec<StaticSecret>,
    blob_id_key: Secret,
    metadata: XChaCha20Poly1305,
}

impl std::fmt::Debug for RepositoryKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepositoryKeys")
            .field("repository", &self.repository)
            .field("public", &self.public)
            .field("can_read", &self.can_read())
            .finish_non_exhaustive()
    }
}

impl Clone for RepositoryKeys {
    fn clone(&self) -> Self {
        let mut keys = Self::assemble(
            self.repository,
            self.public,
            self.id_key.0,
            self.read.as_ref().map(|read| read.to_bytes()),
        );
        keys.earlier_public = self.earlier_public.clone();
        keys.earlier_read = self.earlier_read.clone();
        keys
    }
}

impl RepositoryKeys {
    /// Fresh key material for a new repository.
    pub fn generate(repository: Id) -> Result<Self> {
        let read = StaticSecret::from(random_bytes::<32>()?);
        let public = EncryptionPublicKey(X25519Public::from(&read).to_bytes());
        Ok(Self::assemble(
            repository,
            public,
            random_bytes::<32>()?,
            Some(read.to_bytes()),
        ))
    }

    /// Fresh key material that shares `other`'s id key: blobs get the same
    /// names in both repositories, so one backup pass can store into both
    /// and copies between them deduplicate (`init --like`), while each
    /// keeps its own read key.
    pub fn generate_sharing_id_key(repository: Id, other: &RepositoryKeys) -> Result<Self> {
        let read = StaticSecret::from(random_bytes::<32>()?);
        let public = EncryptionPublicKey(X25519Public::from(&read).to_bytes());
        Ok(Self::assemble(
            repository,
            public,
            other.id_key.0,
            Some(read.to_bytes()),
        ))
    }

    /// Key material from its stored parts (a key slot's payload). A read
    /// key whose public half is not `public` is refused: the parts do not
    /// belong together.
    pub fn from_parts(
        repository: Id,
        public: EncryptionPublicKey,
        id_key: [u8; 32],
        read: Option<[u8; 32]>,
    ) -> Result<Self> {
        if let Some(read) = read {
            let derived = X25519Public::from(&StaticSecret::from(read)).to_bytes();
            if derived != public.0 {
                return Err(StoreError::KeyMismatch(format!(
                    "the read key of repository {repository} does not match its public key {}",
                    public.to_hex()
                )));
            }
        }
        Ok(Self::assemble(repository, public, id_key, read))
    }

    fn assemble(
        repository: Id,
        public: EncryptionPublicKey,
        id_key: [u8; 32],
        read: Option<[u8; 32]>,
    ) -> Self {
        let blob_id_key = Secret(blake3::derive_key(BLOB_ID_CONTEXT, &id_key));
        let metadata_key = Secret(blake3::derive_key(METADATA_CONTEXT, &id_key));
        RepositoryKeys {
            repository,
            public,
            id_key: Secret(id_key),
            read: read.map(StaticSecret::from),
            earlier_public: Vec::new(),
            earlier_read: Vec::new(),
            blob_id_key,
            metadata: XChaCha20Poly1305::new(&metadata_key.0.into()),
        }
    }

    /// These keys with the public halves of the read keys of earlier
    /// rotations (newest first) and, in full keys, those read keys in the
    /// same order, so that what was sealed to them still opens. A read key
    /// whose public half is not the one listed is refused, and so is an
    /// earlier read key in write-only keys.
    pub fn with_earlier(
        mut self,
        earlier_public: &[[u8; 32]],
        earlier_read: &[[u8; 32]],
    ) -> Result<Self> {
        let mismatch = |why: &str| {
            StoreError::KeyMismatch(format!(
                "repository {}: the earlier read keys {why}",
                self.repository
            ))
        };
        if self.read.is_none() && !earlier_read.is_empty() {
            return Err(mismatch("are in write-only keys"));
        }
        if self.read.is_some() && earlier_read.len() != earlier_public.len() {
            return Err(mismatch("do not match their public keys"));
        }
        let mut secrets = Vec::with_capacity(earlier_read.len());
        for (read, public) in earlier_read.iter().zip(earlier_public) {
            let secret = StaticSecret::from(*read);
            if X25519Public::from(&secret).to_bytes() != *public {
                return Err(mismatch("do not match their public keys"));
            }
            secrets.push(secret);
        }
        self.earlier_public = earlier_public
            .iter()
            .map(|public| EncryptionPublicKey(*public))
            .collect();
        self.earlier_read = secrets;
        Ok(self)
    }

    /// The public halves of the read keys of earlier rotations, newest
    /// first, for a key slot.
    pub fn earlier_public_keys(&self) -> Vec<[u8; 32]> {
        self.earlier_public.iter().map(|public| public.0).collect()
    }

    /// The read keys of earlier rotations, newest first, for a key slot
    /// (empty in write-only keys).
    pub fn earlier_read_key_bytes(&self) -> Vec<[u8; 32]> {
        self.earlier_read
            .iter()
            .map(|secret| secret.to_bytes())
            .collect()
    }

    /// Whether `public` is the public half of this read key or of an
    /// earlier one.
    pub fn knows_public_key(&self, public: &EncryptionPublicKey) -> bool {
        self.public == *public || self.earlier_public.contains(public)
    }

    /// Read-key rotation (FORMAT.md 17.7): a fresh read key for what is
    /// written from now on, the current one becoming the newest earlier
    /// one. The id key stays (it names every blob: a new one would end
    /// deduplication).
    pub fn rotated(&self) -> Result<Self> {
        let Some(current) = self.read.as_ref() else {
            return Err(StoreError::ReadKeyMissing {
                object: "the read key to rotate".to_string(),
            });
        };
        let read = StaticSecret::from(random_bytes::<32>()?);
        let public = EncryptionPublicKey(X25519Public::from(&read).to_bytes());
        let mut keys = Self::assemble(
            self.repository,
            public,
            self.id_key.0,
            Some(read.to_bytes()),
        );
        keys.earlier_public = std::iter::once(self.public)
            .chain(self.earlier_public.iter().copied())
            .collect();
        keys.earlier_read = std::iter::once(current.clone())
            .chain(self.earlier_read.iter().cloned())
            .collect();
        Ok(keys)
    }

    /// The read keys to try on what was sealed to one of them, newest
    /// first.
    fn read_keys(&self) -> impl Iterator<Item = (&StaticSecret, &EncryptionPublicKey)> {
        self.read
            .iter()
            .map(|read| (read, &self.public))
            .chain(self.earlier_read.iter().zip(&self.earlier_public))
    }

    /// The same keys without the read key: what a write-only host holds.
    pub fn write_only(&self) -> Self {
        let mut keys = Self::assemble(self.repository, self.public, self.id_key.0, None);
        keys.earlier_public = self.earlier_public.clone();
        keys
    }

    pub fn repository(&self) -> &Id {
        &self.repository
    }

    pub fn public_key(&self) -> EncryptionPublicKey {
        self.public
    }

    /// Whether these keys can decrypt what is sealed to the read key.
    pub fn can_read(&self) -> bool {
        self.read.is_some()
    }

    /// The id key's bytes, for wrapping in a key slot.
    pub fn id_key_bytes(&self) -> [u8; 32] {
        self.id_key.0
    }

    /// The read key's bytes, for wrapping in a key slot.
    pub fn read_key_bytes(&self) -> Option<[u8; 32]> {
        self.read.as_ref().map(|read| read.to_bytes())
    }

    /// How blobs are named in this repository: BLAKE3 keyed with the blob
    /// id key.
    pub fn id_hasher(&self) -> IdHasher {
        IdHasher::Keyed(self.blob_id_key.0)
    }

    /// Encrypts `plain` as an object of `kind` (FORMAT.md 17.4).
    pub fn encrypt_object(&self, kind: SealedKind, plain: &[u8]) -> Result<Vec<u8>> {
        let sealing = kind.sealing();
        let mut header = Vec::with_capacity(8 + 1 + 32 + NONCE_LENGTH);
        header.extend_from_slice(OBJECT_MAGIC);
        header.push(sealing.mode());
        let derived;
        let cipher = match sealing {
            Sealing::Metadata => &self.metadata,
            Sealing::ToReadKey => {
                let (key, ephemeral_public) = self.fresh_agreement(OBJECT_CONTEXT)?;
                header.extend_from_slice(&ephemeral_public);
                derived = XChaCha20Poly1305::new(&key.0.into());
                &derived
            }
        };
        let nonce = random_bytes::<NONCE_LENGTH>()?;
        header.extend_from_slice(&nonce);
        let aad = object_aad(kind, &self.repository, &header);
        let mut sealed = header;
        let body_start = sealed.len();
        sealed.extend_from_slice(plain);
        let mut body = sealed.split_off(body_start);
        seal_in_place(cipher, &nonce, &aad, &mut body);
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// Decrypts an object of `kind` read from storage (`object` names it in
    /// errors). Refuses bytes that are not in the container, a mode other
    /// than the one the kind has, a missing read key (naming it), and any
    /// byte changed, moved to another kind, or taken from another
    /// repository.
    pub fn decrypt_object(&self, kind: SealedKind, bytes: &[u8], object: &str) -> Result<Vec<u8>> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            object: object.to_string(),
            reason: reason.to_string(),
        };
        let sealing = kind.sealing();
        if bytes.len() < 9 || &bytes[..8] != OBJECT_MAGIC {
            return Err(corrupt(
                "is not encrypted, but this repository encrypts every such object",
            ));
        }
        if bytes[8] != sealing.mode() {
            return Err(corrupt(&format!(
                "is sealed in mode {}, but a {} object is always sealed in mode {}",
                bytes[8],
                kind.aad_name(),
                sealing.mode()
            )));
        }
        let header_length = match sealing {
            Sealing::Metadata => 9 + NONCE_LENGTH,
            Sealing::ToReadKey => 9 + 32 + NONCE_LENGTH,
        };
        if bytes.len() < header_length + TAG_LENGTH {
            return Err(corrupt("is too short for its header and tag"));
        }
        let (header, body) = bytes.split_at(header_length);
        let nonce: [u8; NONCE_LENGTH] = header[header_length - NONCE_LENGTH..]
            .try_into()
            .map_err(|_| corrupt("is too short for its header"))?;
        let aad = object_aad(kind, &self.repository, header);
        let does_not_decrypt = || {
            corrupt(
                "does not decrypt: its bytes were changed, or it was encrypted for another \
                 repository or as another kind of object",
            )
        };
        match sealing {
            Sealing::Metadata => {
                let mut plain = body.to_vec();
                open_in_place(&self.metadata, &nonce, &aad, &mut plain)
                    .map_err(|()| does_not_decrypt())?;
                Ok(plain)
            }
            Sealing::ToReadKey => {
                if self.read.is_none() {
                    return Err(StoreError::ReadKeyMissing {
                        object: object.to_string(),
                    });
                }
                let ephemeral: [u8; 32] = header[9..41]
                    .try_into()
                    .map_err(|_| corrupt("is too short for its header"))?;
                // Sealed to the current read key or, before a rotation, to
                // an earlier one; the object does not say which (a bucket
                // reader must not learn it either), so each is tried,
                // newest first. A wrong key fails the tag like a changed
                // byte does.
                for (read, public) in self.read_keys() {
                    let key = agreed_key_reading(OBJECT_CONTEXT, read, &ephemeral, public)
                        .ok_or_else(|| {
                            corrupt("names an ephemeral key that is not a usable X25519 key")
                        })?;
                    let mut plain = body.to_vec();
                    if open_in_place(&cipher_for(&key.0), &nonce, &aad, &mut plain).is_ok() {
                        return Ok(plain);
                    }
                }
                Err(does_not_decrypt())
            }
        }
    }

    /// A key agreed between a fresh ephemeral X25519 key and the read key's
    /// public half, for `context`, and the ephemeral public key a reader
    /// needs to agree on it again.
    fn fresh_agreement(&self, context: &str) -> Result<(Secret, [u8; 32])> {
        let ephemeral = StaticSecret::from(random_bytes::<32>()?);
        let ephemeral_public = X25519Public::from(&ephemeral).to_bytes();
        let key =
            agreed_key(context, &ephemeral, &ephemeral_public, &self.public).ok_or_else(|| {
                StoreError::KeyMismatch(format!(
                    "repository {}'s public encryption key {} is not a usable X25519 key",
                    self.repository,
                    self.public.to_hex()
                ))
            })?;
        Ok((key, ephemeral_public))
    }

    /// A cipher for the pieces of one new pack, under a fresh ephemeral
    /// key, with the cipher this machine runs fastest.
    pub fn pack_sealer(&self) -> Result<PackSealer> {
        self.pack_sealer_with(PackCipher::preferred())
    }

    /// [`RepositoryKeys::pack_sealer`] with the cipher given.
    pub fn pack_sealer_with(&self, cipher: PackCipher) -> Result<PackSealer> {
        let (key, ephemeral_public) = self.fresh_agreement(cipher.context())?;
        Ok(PackSealer {
            pieces: PieceCipher::new(cipher, &key, self.repository)?,
            ephemeral: ephemeral_public,
        })
    }

    /// The cipher for the pieces of the pack whose magic names `cipher`
    /// and whose ephemeral public key is `ephemeral` (from the pack's start).
    pub fn pack_opener(
        &self,
        cipher: PackCipher,
        ephemeral: &[u8; 32],
        object: &str,
    ) -> Result<PackOpener> {
        if self.read.is_none() {
            return Err(StoreError::ReadKeyMissing {
                object: object.to_string(),
            });
        }
        let mut candidates = Vec::new();
        for (read, public) in self.read_keys() {
            let key =
                agreed_key_reading(cipher.context(), read, ephemeral, public).ok_or_else(|| {
                    StoreError::Corrupt {
                        object: object.to_string(),
                        reason: "names an ephemeral key that is not a usable X25519 key"
                            .to_string(),
                    }
                })?;
            candidates.push(PieceCipher::new(cipher, &key, self.repository)?);
        }
        Ok(PackOpener {
            candidates,
            settled: std::sync::atomic::AtomicUsize::new(UNSETTLED),
        })
    }
}

/// The operator's choice of pack cipher, if any ([`PackCipher::choose`]).
static CHOSEN_PACK_CIPHER: std::sync::OnceLock<PackCipher> = std::sync::OnceLock::new();

/// The AEAD that seals the pieces of a pack, named by the pack's magic
/// (FORMAT.md 17.3). Each pack has its own key and counts its nonces
/// (offset and role), so a 96-bit nonce is as safe as a 192-bit one there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackCipher {
    /// `CAIRNPE1`: what any processor runs fast in constant time.
    XChaCha20Poly1305,
    /// `CAIRNPE2`: about three times faster where the processor has AES
    /// and carry-less multiply instructions.
    Aes256Gcm,
}

impl PackCipher {
    /// The magic that starts and ends a pack sealed with this cipher.
    pub fn magic(self) -> &'static [u8; 8] {
        match self {
            PackCipher::XChaCha20Poly1305 => b"CAIRNPE1",
            PackCipher::Aes256Gcm => b"CAIRNPE2",
        }
    }

    /// The cipher an encrypted pack's magic names, if it names one.
    pub fn of_magic(magic: &[u8]) -> Option<PackCipher> {
        [PackCipher::XChaCha20Poly1305, PackCipher::Aes256Gcm]
            .into_iter()
            .find(|cipher| magic == cipher.magic())
    }

    /// What this machine seals new packs with: AES-256-GCM when the
    /// processor accelerates it (where it does not, ring's portable AES is
    /// several times slower than XChaCha20), else XChaCha20-Poly1305.
    /// Readers open both, whichever machine wrote the pack.
    pub fn preferred() -> PackCipher {
        if let Some(chosen) = CHOSEN_PACK_CIPHER.get() {
            return *chosen;
        }
        if aes_is_accelerated() {
            PackCipher::Aes256Gcm
        } else {
            PackCipher::XChaCha20Poly1305
        }
    }

    /// Makes every pack this process seals from now on use `cipher`,
    /// whatever the processor offers: the operator's choice
    /// (`--pack-cipher`, FORMAT.md 17.3). The first choice holds.
    pub fn choose(cipher: PackCipher) {
        let _ = CHOSEN_PACK_CIPHER.set(cipher);
    }

    fn context(self) -> &'static str {
        match self {
            PackCipher::XChaCha20Poly1305 => PACK_CONTEXT,
            PackCipher::Aes256Gcm => PACK_CONTEXT_AES,
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn aes_is_accelerated() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}

#[cfg(target_arch = "aarch64")]
fn aes_is_accelerated() -> bool {
    std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull")
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn aes_is_accelerated() -> bool {
    false
}

/// Writes one pack's pieces: every stored blob or shared frame, and the
/// header, each sealed under the pack's own key.
pub struct PackSealer {
    pieces: PieceCipher,
    ephemeral: [u8; 32],
}

impl PackSealer {
    /// The ephemeral public key a reader derives the pack's key from; it
    /// follows the pack's magic and is listed with the pack in index files.
    pub fn ephemeral(&self) -> [u8; 32] {
        self.ephemeral
    }

    /// Seals the stored bytes of the piece at `offset` in the pack, in
    /// place (appends the tag).
    pub fn seal_piece(&self, offset: u64, stored: &mut Vec<u8>) {
        self.pieces.seal(Role::Piece, offset, stored);
    }

    /// The cipher this pack's pieces are sealed with; its magic starts and
    /// ends the pack.
    pub fn cipher(&self) -> PackCipher {
        self.pieces.cipher()
    }

    /// Seals `bytes`, the piece at `offset` in the pack, where they lie,
    /// and returns its tag: a pack's pieces are sealed last to first in
    /// the buffer that gathered them, each moved up to make room for the
    /// tags before it.
    pub fn seal_piece_detached(&self, offset: u64, bytes: &mut [u8]) -> [u8; TAG_LENGTH] {
        self.pieces.seal_detached(Role::Piece, offset, bytes)
    }

    /// Seals the header, which starts at `header_start`, in place.
    pub fn seal_header(&self, header_start: u64, header: &mut Vec<u8>) {
        self.pieces.seal(Role::Header, header_start, header);
    }
}

/// Reads one pack's pieces.
///
/// A pack does not say which read key it was sealed to (FORMAT.md 17.7):
/// with earlier read keys, there is one candidate cipher per read key, and
/// the first piece or header that opens settles which one the pack uses.
/// Without a rotation there is one candidate and nothing is tried twice.
pub struct PackOpener {
    candidates: Vec<PieceCipher>,
    /// The index of the candidate that opened a piece, or [`UNSETTLED`].
    settled: std::sync::atomic::AtomicUsize,
}

const UNSETTLED: usize = usize::MAX;

impl PackOpener {
    /// Opens the piece stored at `offset`, in place (removes the tag).
    /// `object` names the pack in an error; it is called only then (a
    /// name formatted for each of a verify's blobs cost more than it).
    pub fn open_piece(
        &self,
        offset: u64,
        sealed: &mut Vec<u8>,
        object: &dyn Fn() -> String,
    ) -> Result<()> {
        self.open(Role::Piece, offset, sealed, object)
    }

    /// Opens the header stored at `header_start`, in place.
    pub fn open_header(&self, header_start: u64, sealed: &mut Vec<u8>, object: &str) -> Result<()> {
        self.open(Role::Header, header_start, sealed, &|| object.to_string())
    }

    fn open(
        &self,
        role: Role,
        offset: u64,
        sealed: &mut Vec<u8>,
        object: &dyn Fn() -> String,
    ) -> Result<()> {
        use std::sync::atomic::Ordering;
        let settled = self.settled.load(Ordering::Acquire);
        if let Some(cipher) = self.candidates.get(settled) {
            return cipher.open(role, offset, sealed, object);
        }
        if let [only] = self.candidates.as_slice() {
            return only.open(role, offset, sealed, object);
        }
        // A failed open may leave the bytes changed (ring does not promise
        // otherwise), so each try works on a copy until one opens.
        let mut last = None;
        for (index, cipher) in self.candidates.iter().enumerate() {
            let mut attempt = sealed.clone();
            match cipher.open(role, offset, &mut attempt, object) {
                Ok(()) => {
                    *sealed = attempt;
                    self.settled.store(index, Ordering::Release);
                    return Ok(());
                }
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| StoreError::ReadKeyMissing { object: object() }))
    }
}

#[derive(Clone, Copy)]
enum Role {
    Piece,
    Header,
}

/// One pack's AEAD, keyed for that pack alone.
enum PieceAead {
    XChaCha(XChaCha20Poly1305),
    // Boxed: ring's expanded AES key schedule is ~544 bytes.
    Aes(Box<ring::aead::LessSafeKey>),
}

struct PieceCipher {
    aead: PieceAead,
    repository: Id,
}

impl PieceCipher {
    fn new(cipher: PackCipher, key: &Secret, repository: Id) -> Result<Self> {
        let aead = match cipher {
            PackCipher::XChaCha20Poly1305 => {
                PieceAead::XChaCha(XChaCha20Poly1305::new(&key.0.into()))
            }
            PackCipher::Aes256Gcm => {
                let unbound = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &key.0)
                    .map_err(|_| {
                        StoreError::Invalid("AES-256-GCM refused a 32-byte key".to_string())
                    })?;
                PieceAead::Aes(Box::new(ring::aead::LessSafeKey::new(unbound)))
            }
        };
        Ok(PieceCipher { aead, repository })
    }

    fn cipher(&self) -> PackCipher {
        match self.aead {
            PieceAead::XChaCha(_) => PackCipher::XChaCha20Poly1305,
            PieceAead::Aes(_) => PackCipher::Aes256Gcm,
        }
    }

    /// The nonce is the piece's offset and role: unique within the pack,
    /// and the pack's key is used for no other pack (FORMAT.md 17.3). The
    /// 24-byte XChaCha nonce is `offset || 0^15 || role`; AES-GCM takes
    /// the 12 bytes `offset || 0^3 || role`.
    fn nonce_and_aad(&self, role: Role, offset: u64) -> ([u8; NONCE_LENGTH], Vec<u8>) {
        let mut nonce = [0u8; NONCE_LENGTH];
        nonce[..8].copy_from_slice(&offset.to_le_bytes());
        let (prefix, role_byte) = match role {
            Role::Piece => (PIECE_AAD_PREFIX, 0),
            Role::Header => (HEADER_AAD_PREFIX, 1),
        };
        match self.aead {
            PieceAead::XChaCha(_) => nonce[NONCE_LENGTH - 1] = role_byte,
            PieceAead::Aes(_) => nonce[AES_NONCE_LENGTH - 1] = role_byte,
        }
        let mut aad = Vec::with_capacity(prefix.len() + 32 + 8);
        aad.extend_from_slice(prefix);
        aad.extend_from_slice(&self.repository.0);
        aad.extend_from_slice(&offset.to_le_bytes());
        (nonce, aad)
    }

    /// Seals `bytes` where they lie and appends the tag.
    fn seal(&self, role: Role, offset: u64, bytes: &mut Vec<u8>) {
        let tag = self.seal_detached(role, offset, bytes);
        bytes.extend_from_slice(&tag);
    }

    /// Seals `bytes` where they lie and returns the tag, for the caller to
    /// place after them.
    fn seal_detached(&self, role: Role, offset: u64, bytes: &mut [u8]) -> [u8; TAG_LENGTH] {
        let (nonce, aad) = self.nonce_and_aad(role, offset);
        let mut sealed_tag = [0u8; TAG_LENGTH];
        // Both ciphers take messages far longer than any piece (XChaCha20
        // 256 GiB, AES-GCM 64 GiB), so sealing cannot fail.
        #[allow(
            clippy::expect_used,
            reason = "no failure is possible for a piece's length"
        )]
        match &self.aead {
            PieceAead::XChaCha(cipher) => {
                let tag = cipher
                    .encrypt_inout_detached(&XNonce::from(nonce), &aad, bytes.into())
                    .expect("sealing a piece cannot fail");
                sealed_tag.copy_from_slice(&tag);
            }
            PieceAead::Aes(key) => {
                let tag = key
                    .seal_in_place_separate_tag(
                        aes_nonce(&nonce),
                        ring::aead::Aad::from(&aad),
                        bytes,
                    )
                    .expect("sealing a piece cannot fail");
                sealed_tag.copy_from_slice(tag.as_ref());
            }
        }
        sealed_tag
    }

    fn open(
        &self,
        role: Role,
        offset: u64,
        bytes: &mut Vec<u8>,
        object: &dyn Fn() -> String,
    ) -> Result<()> {
        let (nonce, aad) = self.nonce_and_aad(role, offset);
        let opened = match &self.aead {
            PieceAead::XChaCha(cipher) => open_in_place(cipher, &nonce, &aad, bytes),
            PieceAead::Aes(key) => key
                .open_in_place(aes_nonce(&nonce), ring::aead::Aad::from(&aad), bytes)
                .map(|plain| plain.len())
                .map(|length| bytes.truncate(length))
                .map_err(|_| ()),
        };
        opened.map_err(|()| StoreError::Corrupt {
            object: object(),
            reason: match role {
                Role::Piece => format!(
                    "the piece at offset {offset} does not decrypt (its bytes were changed, \
                     moved, or belong to another pack or repository)"
                ),
                Role::Header => "its header does not decrypt (its bytes were changed, or it \
                                 belongs to another repository)"
                    .to_string(),
            },
        })
    }
}

/// AES-GCM's 96-bit nonce: the first 12 bytes of the piece nonce.
const AES_NONCE_LENGTH: usize = 12;

fn aes_nonce(nonce: &[u8; NONCE_LENGTH]) -> ring::aead::Nonce {
    let mut short = [0u8; AES_NONCE_LENGTH];
    short.copy_from_slice(&nonce[..AES_NONCE_LENGTH]);
    ring::aead::Nonce::assume_unique_for_key(short)
}

fn object_aad(kind: SealedKind, repository: &Id, header: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(OBJECT_AAD_PREFIX.len() + 16 + 32 + header.len());
    aad.extend_from_slice(OBJECT_AAD_PREFIX);
    aad.extend_from_slice(kind.aad_name().as_bytes());
    aad.push(0);
    aad.extend_from_slice(&repository.0);
    aad.extend_from_slice(header);
    aad
}

/// `derive_key(context, shared || ephemeral public || recipient public)`,
/// or `None` when the agreement is all zeros (a low-order point).
fn agreed_key(
    context: &str,
    ephemeral: &StaticSecret,
    ephemeral_public: &[u8; 32],
    recipient: &EncryptionPublicKey,
) -> Option<Secret> {
    let shared = ephemeral.diffie_hellman(&X25519Public::from(recipient.0));
    derive_agreed(context, shared, ephemeral_public, &recipient.0)
}

fn agreed_key_reading(
    context: &str,
    read: &StaticSecret,
    ephemeral_public: &[u8; 32],
    recipient: &EncryptionPublicKey,
) -> Option<Secret> {
    let shared = read.diffie_hellman(&X25519Public::from(*ephemeral_public));
    derive_agreed(context, shared, ephemeral_public, &recipient.0)
}

fn derive_agreed(
    context: &str,
    shared: x25519_dalek::SharedSecret,
    ephemeral_public: &[u8; 32],
    recipient: &[u8; 32],
) -> Option<Secret> {
    if !shared.was_contributory() {
        return None;
    }
    let mut material = [0u8; 96];
    material[..32].copy_from_slice(shared.as_bytes());
    material[32..64].copy_from_slice(ephemeral_public);
    material[64..].copy_from_slice(recipient);
    let key = Secret(blake3::derive_key(context, &material));
    material.zeroize();
    Some(key)
}

/// Public so key slots (keyslot.rs) seal the same way.
pub(crate) fn seal_in_place(
    cipher: &XChaCha20Poly1305,
    nonce: &[u8; NONCE_LENGTH],
    aad: &[u8],
    bytes: &mut Vec<u8>,
) {
    let nonce = XNonce::from(*nonce);
    // Vec grows as needed and XChaCha20 takes messages up to 256 GiB, far
    // beyond any object's limit, so this cannot fail.
    #[allow(clippy::expect_used, reason = "see above: no failure is possible")]
    cipher
        .encrypt_in_place(&nonce, aad, bytes)
        .expect("sealing into a Vec cannot fail");
}

pub(crate) fn open_in_place(
    cipher: &XChaCha20Poly1305,
    nonce: &[u8; NONCE_LENGTH],
    aad: &[u8],
    bytes: &mut Vec<u8>,
) -> std::result::Result<(), ()> {
    let nonce = XNonce::from(*nonce);
    cipher.decrypt_in_place(&nonce, aad, bytes).map_err(|_| ())
}

pub(crate) fn cipher_for(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&(*key).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> RepositoryKeys {
        RepositoryKeys::generate(Id::of(b"repository")).unwrap()
    }

    /// FORMAT.md 17.8, checked against values computed independently
    /// (with `b3sum --derive-key` and `b3sum --keyed`).
    #[test]
    fn test_vectors_of_format_17_8() {
        let id_key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let keys =
            RepositoryKeys::from_parts(Id([0; 32]), EncryptionPublicKey([9; 32]), id_key, None)
                .unwrap();
        let IdHasher::Keyed(blob_id_key) = keys.id_hasher() else {
            panic!("an encrypted repository's ids are keyed");
        };
        assert_eq!(
            hex::encode(blob_id_key),
            "8743a8ce0065f7f81ad400f5e67dcae7acfb54ce17e49d5fa131cdeec640eded"
        );
        assert_eq!(
            hex::encode(blake3::derive_key(METADATA_CONTEXT, &id_key)),
            "4145cd959d686e44facb3cd38c1e790aa59b604fc242e5fb25353a4ba3b702a0"
        );
        assert_eq!(
            keys.id_hasher().id(b"cairn").to_hex(),
            "1a22e33559447fecccdfefb1c7d03345d8a5d1cac85c8e14869a84332e377935"
        );
        assert_eq!(
            IdHasher::Plain.id(b"cairn").to_hex(),
            "0a35e41e05f8a79793f4436f3c778283f6215c381a24071eb1ae871aba2c797b"
        );
    }

    #[test]
    fn objects_round_trip_in_both_modes() {
        let keys = keys();
        for kind in [SealedKind::Index, SealedKind::Snapshot] {
            let sealed = keys.encrypt_object(kind, b"secret body").unwrap();
            assert!(!sealed.windows(6).any(|w| w == b"secret"));
            assert_eq!(
                keys.decrypt_object(kind, &sealed, "x").unwrap(),
                b"secret body"
            );
        }
    }

    #[test]
    fn a_write_only_host_reads_metadata_but_not_snapshots() {
        let keys = keys();
        let host = keys.write_only();
        let index = host.encrypt_object(SealedKind::Index, b"listing").unwrap();
        assert_eq!(
            host.decrypt_object(SealedKind::Index, &index, "i").unwrap(),
            b"listing"
        );
        let snapshot = host
            .encrypt_object(SealedKind::Snapshot, b"manifest")
            .unwrap();
        assert!(matches!(
            host.decrypt_object(SealedKind::Snapshot, &snapshot, "s"),
            Err(StoreError::ReadKeyMissing { .. })
        ));
        assert_eq!(
            keys.decrypt_object(SealedKind::Snapshot, &snapshot, "s")
                .unwrap(),
            b"manifest"
        );
    }

    #[test]
    fn every_byte_kind_and_repository_is_bound() {
        let keys = keys();
        let sealed = keys.encrypt_object(SealedKind::Forget, b"record").unwrap();
        for position in 0..sealed.len() {
            let mut changed = sealed.clone();
            changed[position] ^= 1;
            assert!(
                keys.decrypt_object(SealedKind::Forget, &changed, "f")
                    .is_err()
            );
        }
        assert!(
            keys.decrypt_object(SealedKind::Snapshot, &sealed, "f")
                .is_err()
        );
        let other = RepositoryKeys::from_parts(
            Id::of(b"other"),
            keys.public_key(),
            keys.id_key_bytes(),
            keys.read_key_bytes(),
        )
        .unwrap();
        assert!(
            other
                .decrypt_object(SealedKind::Forget, &sealed, "f")
                .is_err()
        );
    }

    #[test]
    fn pack_pieces_are_bound_to_their_offset_role_and_cipher() {
        let keys = keys();
        for cipher in [PackCipher::XChaCha20Poly1305, PackCipher::Aes256Gcm] {
            let sealer = keys.pack_sealer_with(cipher).unwrap();
            assert_eq!(sealer.cipher(), cipher);
            assert_eq!(PackCipher::of_magic(cipher.magic()), Some(cipher));
            let mut piece = b"stored blob".to_vec();
            sealer.seal_piece(40, &mut piece);
            assert_eq!(piece.len(), 11 + TAG_LENGTH);
            let opener = keys.pack_opener(cipher, &sealer.ephemeral(), "p").unwrap();
            let mut moved = piece.clone();
            assert!(opener.open_piece(51, &mut moved, &|| "p".into()).is_err());
            let mut as_header = piece.clone();
            assert!(opener.open_header(40, &mut as_header, "p").is_err());
            let mut flipped = piece.clone();
            flipped[3] ^= 1;
            assert!(opener.open_piece(40, &mut flipped, &|| "p".into()).is_err());
            // A pack whose magic were swapped for the other cipher's opens
            // nothing: each cipher derives its own key.
            let other = match cipher {
                PackCipher::XChaCha20Poly1305 => PackCipher::Aes256Gcm,
                PackCipher::Aes256Gcm => PackCipher::XChaCha20Poly1305,
            };
            let swapped = keys.pack_opener(other, &sealer.ephemeral(), "p").unwrap();
            let mut as_other = piece.clone();
            assert!(
                swapped
                    .open_piece(40, &mut as_other, &|| "p".into())
                    .is_err()
            );
            opener.open_piece(40, &mut piece, &|| "p".into()).unwrap();
            assert_eq!(piece, b"stored blob");
            let mut header = b"header".to_vec();
            sealer.seal_header(100, &mut header);
            opener.open_header(100, &mut header, "p").unwrap();
            assert_eq!(header, b"header");
            assert!(matches!(
                keys.write_only()
                    .pack_opener(cipher, &sealer.ephemeral(), "p"),
                Err(StoreError::ReadKeyMissing { .. })
            ));
        }
    }

    #[test]
    fn a_rotated_read_key_opens_the_old_and_the_new_but_the_old_opens_only_the_old() {
        let old = keys();
        let snapshot = old.encrypt_object(SealedKind::Snapshot, b"before").unwrap();
        let sealer = old.pack_sealer_with(PackCipher::Aes256Gcm).unwrap();
        let mut piece = b"old piece".to_vec();
        sealer.seal_piece(40, &mut piece);
        let rotated = old.rotated().unwrap();
        assert_ne!(rotated.public_key(), old.public_key());
        assert!(rotated.knows_public_key(&old.public_key()));
        assert_eq!(rotated.id_key_bytes(), old.id_key_bytes());
        let after = rotated
            .encrypt_object(SealedKind::Snapshot, b"after")
            .unwrap();
        // The holder of the rotated keys (as a slot would carry them)
        // opens both, and an old pack's pieces, once its key is settled.
        let held = RepositoryKeys::from_parts(
            *rotated.repository(),
            rotated.public_key(),
            rotated.id_key_bytes(),
            rotated.read_key_bytes(),
        )
        .unwrap()
        .with_earlier(
            &rotated.earlier_public_keys(),
            &rotated.earlier_read_key_bytes(),
        )
        .unwrap();
        for (bytes, plain) in [(&snapshot, &b"before"[..]), (&after, &b"after"[..])] {
            let opened = held
                .decrypt_object(SealedKind::Snapshot, bytes, "s")
                .unwrap();
            assert_eq!(opened, plain);
        }
        let opener = held
            .pack_opener(PackCipher::Aes256Gcm, &sealer.ephemeral(), "pack")
            .unwrap();
        let mut opened = piece.clone();
        opener
            .open_piece(40, &mut opened, &|| "pack".into())
            .unwrap();
        assert_eq!(opened, b"old piece");
        let mut moved = piece.clone();
        assert!(
            opener
                .open_piece(41, &mut moved, &|| "pack".into())
                .is_err()
        );
        // The old keys alone (a holder removed before the rotation) do not
        // open what is written after it.
        assert!(
            old.decrypt_object(SealedKind::Snapshot, &after, "s")
                .is_err()
        );
        // Earlier read keys that do not match their public halves, or in
        // write-only keys, are refused.
        let mismatched = rotated
            .clone()
            .with_earlier(&[[9; 32]], &rotated.earlier_read_key_bytes());
        assert!(mismatched.is_err());
        let write_only = rotated.write_only();
        assert!(!write_only.can_read());
        assert!(write_only.knows_public_key(&old.public_key()));
        assert!(
            write_only
                .with_earlier(&rotated.earlier_public_keys(), &[[1; 32]])
                .is_err()
        );
    }

    #[test]
    fn mismatched_parts_are_refused() {
        let keys = keys();
        let other = RepositoryKeys::generate(Id::of(b"repository")).unwrap();
        assert!(
            RepositoryKeys::from_parts(
                *keys.repository(),
                other.public_key(),
                keys.id_key_bytes(),
                keys.read_key_bytes()
            )
            .is_err()
        );
    }

    #[test]
    fn keyed_ids_differ_from_plain_ones_and_between_repositories() {
        let first = keys();
        let second = keys();
        let plain = IdHasher::Plain.id(b"chunk");
        assert_ne!(first.id_hasher().id(b"chunk"), plain);
        assert_ne!(
            first.id_hasher().id(b"chunk"),
            second.id_hasher().id(b"chunk")
        );
        let mut streaming = first.id_hasher().hasher();
        streaming.update(b"chu");
        streaming.update(b"nk");
        assert_eq!(
            Id(*streaming.finalize().as_bytes()),
            first.id_hasher().id(b"chunk")
        );
    }
}
