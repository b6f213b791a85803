//! Bearer tokens for `cairn serve`: reading the token file and
//! `CAIRN_SERVE_TOKEN`, and deciding which role a presented token has.
//! Shared by every server `cairn serve` runs. Never keeps a token in
//! the clear: each is held as its BLAKE3 hash, and a presented token is
//! hashed and compared with `blake3::Hash`'s constant-time equality, so the
//! time a refusal takes says nothing about how much of a token was right.
//!
//! Token file, one token per line (blank lines and `#` comments skipped):
//!
//! ```text
//! read-only:TOKEN             # the token itself
//! operator:blake3:HEX         # or the 64-hex BLAKE3 hash of the token
//! ```
//!
//! A token of at least 16 characters; `CAIRN_SERVE_TOKEN` is one operator
//! token.

use std::path::Path;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read: listings, jobs, the status page.
    ReadOnly,
    /// Read, and start backups, restores, verifies and drills.
    Operator,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::Operator => "operator",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        match text {
            "read-only" => Some(Role::ReadOnly),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

/// The shortest token accepted: a short one could be guessed.
pub const MIN_TOKEN_LENGTH: usize = 16;

/// The tokens a server accepts, each as its hash.
#[derive(Default)]
pub struct Tokens {
    known: Vec<(blake3::Hash, Role)>,
}

impl Tokens {
    /// Reads `file` (if given) and the operator token `from_env` (if
    /// given); an error names the file and line at fault.
    pub fn load(file: Option<&Path>, from_env: Option<&str>) -> Result<Tokens, String> {
        let mut tokens = Tokens::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|error| format!("--token-file {}: {error}", path.display()))?;
            for (number, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let at = format!("{}:{}", path.display(), number + 1);
                tokens
                    .known
                    .push(parse_line(line).map_err(|why| format!("{at}: {why}"))?);
            }
        }
        if let Some(token) = from_env {
            let token = token.trim();
            check_token(token).map_err(|why| format!("CAIRN_SERVE_TOKEN: {why}"))?;
            tokens
                .known
                .push((blake3::hash(token.as_bytes()), Role::Operator));
        }
        Ok(tokens)
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// The role of `presented`, if it is a known token. Every known token
    /// is compared, whichever matches, so the time taken does not say which.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let hash = blake3::hash(presented.as_bytes());
        let mut role = None;
        for (known, known_role) in &self.known {
            // blake3::Hash's == is constant-time.
            if *known == hash {
                role = role.max(Some(*known_role));
            }
        }
        role
    }
}

fn parse_line(line: &str) -> Result<(blake3::Hash, Role), String> {
    let (role, rest) = line
        .split_once(':')
        .ok_or("expected ROLE:TOKEN or ROLE:blake3:HEX")?;
    let role = Role::parse(role)
        .ok_or_else(|| format!("unknown role {role:?} (read-only or operator)"))?;
    if let Some(hex) = rest.strip_prefix("blake3:") {
        let hash = blake3::Hash::from_hex(hex)
            .map_err(|_| "blake3: must be followed by 64 hex digits".to_string())?;
        return Ok((hash, role));
    }
    check_token(rest)?;
    Ok((blake3::hash(rest.as_bytes()), role))
}

fn check_token(token: &str) -> Result<(), String> {
    if token.chars().count() < MIN_TOKEN_LENGTH {
        return Err(format!(
            "a token must have at least {MIN_TOKEN_LENGTH} characters"
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a token cannot hold spaces or control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_hashed_tokens_have_their_roles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let hashed = blake3::hash(b"operator-secret-0001").to_hex();
        std::fs::write(
            &path,
            format!("# comment\n\nread-only:reader-secret-00001\noperator:blake3:{hashed}\n"),
        )
        .unwrap();
        let tokens = Tokens::load(Some(&path), None).unwrap();
        assert_eq!(tokens.role_of("reader-secret-00001"), Some(Role::ReadOnly));
        assert_eq!(tokens.role_of("operator-secret-0001"), Some(Role::Operator));
        assert_eq!(tokens.role_of("reader-secret-0000"), None);
        assert_eq!(tokens.role_of(hashed.as_str()), None);
    }

    #[test]
    fn bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "read-only:short\n").unwrap();
        let error = Tokens::load(Some(&path), None).err().unwrap();
        assert!(
            error.contains("tokens:1") && error.contains("16"),
            "{error}"
        );
        std::fs::write(&path, "admin:0123456789abcdef0\n").unwrap();
        let error = Tokens::load(Some(&path), None).err().unwrap();
        assert!(error.contains("unknown role"), "{error}");
    }
}
