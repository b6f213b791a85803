//! Per-repository S3 settings: the query of a location
//! (`s3://bucket/prefix?region=eu-west-1&profile=eu`), parsed, validated
//! and merged over the process-wide defaults (flags, `AWS_*` variables).
//!
//! Owns which settings exist, their syntax, and keeping secrets out of
//! locations: a location never carries a key, a password or a token (only
//! the name of a profile, of a credentials file, or of the environment
//! variables that hold them), and [`redact_location`] makes any string a
//! user gave as a location safe to print. The settings are not part of the
//! repository's identity: `S3Location::url` leaves them out, so pins and
//! caches keyed by it do not change when only a setting does. Never reads
//! credentials (see `aws_profile`) and never sends a request.

use crate::error::{Result, StoreError};

/// Settings one repository may give in its location's query (or, in the
/// plan file, in its `[[repository]]` table). Each is `None` when not given,
/// so the defaults show through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// The region requests are signed for (`region=eu-west-1`).
    pub region: Option<String>,
    /// The service's URL, for S3-compatible services.
    pub endpoint: Option<String>,
    /// A profile of the shared AWS config and credentials files.
    pub profile: Option<String>,
    /// The storage class of every object written (`STANDARD_IA`, ...).
    pub storage_class: Option<String>,
    /// Address buckets by path (`true`) or by host name (`false`).
    pub path_style: Option<bool>,
    /// Retries of a failed request before it is given up (0 to 20).
    pub retries: Option<usize>,
    /// Seconds a read may go without a byte before its attempt is given
    /// up (1 to 3600; `super::DEFAULT_READ_TIMEOUT` when not given).
    pub read_timeout: Option<u64>,
    /// The shared credentials file to read the profile from.
    pub credentials_file: Option<String>,
    /// Names of the environment variables that hold this repository's
    /// access key id, secret key and (optional) session token.
    pub access_key_id_env: Option<String>,
    pub secret_access_key_env: Option<String>,
    pub session_token_env: Option<String>,
}

/// Every setting's name, as written in a query or a plan table.
pub const SETTING_NAMES: [&str; 11] = [
    "region",
    "endpoint",
    "profile",
    "storage_class",
    "path_style",
    "retries",
    "read_timeout",
    "credentials_file",
    "access_key_id_env",
    "secret_access_key_env",
    "session_token_env",
];

/// Most retries a repository may ask for: past this a dead service holds a
/// backup for many minutes.
const MAX_RETRIES: usize = 20;
/// Longest read timeout a repository may ask for, in seconds: past an
/// hour of silence a connection is not coming back.
const MAX_READ_TIMEOUT: u64 = 3600;

impl S3Settings {
    /// Parses a query (`a=b&c=d`, without the `?`). Errors name the
    /// location by `shown` (already redacted) and the setting, never the
    /// value of a setting that may be a secret.
    pub fn parse_query(query: &str, shown: &str) -> Result<S3Settings> {
        let mut settings = S3Settings::default();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "repository {shown}: setting `{name}` is not valid percent-encoded UTF-8"
                ))
            })?;
            settings
                .set(name, &value)
                .map_err(|reason| StoreError::Invalid(format!("repository {shown}: {reason}")))?;
        }
        Ok(settings)
    }

    /// Sets one setting by name; the reason if the name or value is wrong.
    pub fn set(&mut self, name: &str, value: &str) -> std::result::Result<(), String> {
        if value.is_empty() {
            return Err(format!("setting `{name}` has no value"));
        }
        let text = || Some(value.to_string());
        match name {
            "region" => {
                if !value
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
                {
                    return Err(format!(
                        "region {value:?} is not a region name (letters, digits and `-`)"
                    ));
                }
                self.region = text();
            }
            "endpoint" => {
                if !(value.starts_with("http://") || value.starts_with("https://")) {
                    return Err(format!(
                        "endpoint {:?} must be an http:// or https:// URL",
                        redact_location(value)
                    ));
                }
                if value.contains('@') {
                    return Err(
                        "endpoint must not carry credentials (user:password@): use a profile"
                            .into(),
                    );
                }
                self.endpoint = text();
            }
            "profile" => self.profile = text(),
            "storage_class" => {
                if !value
                    .bytes()
                    .all(|byte| byte.is_ascii_uppercase() || byte == b'_')
                {
                    return Err(format!(
                        "storage_class {value:?} is not a storage class (e.g. STANDARD_IA)"
                    ));
                }
                self.storage_class = text();
            }
            "path_style" => {
                self.path_style = Some(match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(format!("path_style is true or false, not {value:?}")),
                })
            }
            "retries" => match value.parse::<usize>() {
                Ok(retries) if retries <= MAX_RETRIES => self.retries = Some(retries),
                _ => return Err(format!("retries is a number from 0 to {MAX_RETRIES}")),
            },
            "read_timeout" => match value.parse::<u64>() {
                Ok(seconds) if (1..=MAX_READ_TIMEOUT).contains(&seconds) => {
                    self.read_timeout = Some(seconds)
                }
                _ => {
                    return Err(format!(
                        "read_timeout is a number of seconds from 1 to {MAX_READ_TIMEOUT}, \
                         not {value:?}"
                    ));
                }
            },
            "credentials_file" => self.credentials_file = text(),
            "access_key_id_env" | "secret_access_key_env" | "session_token_env" => {
                if !value
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
                {
                    // Most likely the secret itself: do not echo it.
                    return Err(format!(
                        "{name} is the NAME of an environment variable (letters, digits, `_`), \
                         not its value"
                    ));
                }
                let slot = match name {
                    "access_key_id_env" => &mut self.access_key_id_env,
                    "secret_access_key_env" => &mut self.secret_access_key_env,
                    _ => &mut self.session_token_env,
                };
                *slot = text();
            }
            _ if looks_secret(name) => {
                return Err(format!(
                    "setting `{name}` looks like a secret, and secrets never go in a location: \
                     name a profile (profile=), a credentials file (credentials_file=) or the \
                     environment variables that hold them (access_key_id_env=, \
                     secret_access_key_env=)"
                ));
            }
            _ => {
                return Err(format!(
                    "unknown setting `{name}` (known: {})",
                    SETTING_NAMES.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The settings as a query (without `?`), in [`SETTING_NAMES`]'s order.
    pub fn to_query(&self) -> String {
        let mut pairs = Vec::new();
        for name in SETTING_NAMES {
            let value = match name {
                "region" => self.region.clone(),
                "endpoint" => self.endpoint.clone(),
                "profile" => self.profile.clone(),
                "storage_class" => self.storage_class.clone(),
                "path_style" => self.path_style.map(|style| style.to_string()),
                "retries" => self.retries.map(|retries| retries.to_string()),
                "read_timeout" => self.read_timeout.map(|seconds| seconds.to_string()),
                "credentials_file" => self.credentials_file.clone(),
                "access_key_id_env" => self.access_key_id_env.clone(),
                "secret_access_key_env" => self.secret_access_key_env.clone(),
                _ => self.session_token_env.clone(),
            };
            if let Some(value) = value {
                pairs.push(format!("{name}={}", percent_encode(&value)));
            }
        }
        pairs.join("&")
    }
}

/// Whether a setting's name suggests its value is a secret.
fn looks_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "secret",
        "password",
        "passwd",
        "token",
        "key",
        "signature",
        "credential",
        "auth",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// `text` (a location as a user gave it) safe to print: a `user:password@`
/// is replaced by `***@`, and the value of every query parameter that is
/// not a known setting by `***`.
pub fn redact_location(text: &str) -> String {
    let (base, query) = match text.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (text, None),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => base.to_string(),
            }
        }
        None => base.to_string(),
    };
    let Some(query) = query else {
        return base;
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if !SETTING_NAMES.contains(&name) => format!("{name}=***"),
            Some((name, value)) if name == "endpoint" && value.contains('@') => {
                format!("{name}=***")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = text.get(index + 1..index + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                index += 3;
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~/:".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_a_query() {
        let settings = S3Settings::parse_query(
            "region=eu-west-1&profile=eu%20west&path_style=true&endpoint=http://127.0.0.1:9000&retries=2&read_timeout=45",
            "s3://b",
        )
        .unwrap();
        assert_eq!(settings.read_timeout, Some(45));
        assert_eq!(settings.region.as_deref(), Some("eu-west-1"));
        assert_eq!(settings.profile.as_deref(), Some("eu west"));
        assert_eq!(settings.path_style, Some(true));
        assert_eq!(settings.retries, Some(2));
        assert_eq!(
            S3Settings::parse_query(&settings.to_query(), "s3://b").unwrap(),
            settings
        );
    }

    #[test]
    fn a_bad_read_timeout_is_named_with_its_value() {
        for value in ["0", "3601", "30s", "-1"] {
            let error = S3Settings::parse_query(&format!("read_timeout={value}"), "s3://b")
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("read_timeout") && error.contains(&format!("{value:?}")),
                "{error}"
            );
        }
    }

    #[test]
    fn secrets_are_refused_without_being_echoed() {
        for query in [
            "secret_access_key=SuperSecret123",
            "aws_session_token=SuperSecret123",
            "access_key_id_env=SuperSecret/123+",
            "password=SuperSecret123",
        ] {
            let error = S3Settings::parse_query(query, "s3://b").unwrap_err();
            assert!(!error.to_string().contains("SuperSecret"), "{error}");
        }
        assert!(S3Settings::parse_query("colour=blue", "s3://b").is_err());
    }

    #[test]
    fn locations_are_redacted() {
        assert_eq!(
            redact_location("s3://AKIA:SuperSecret@bucket/p?region=eu-west-1&secret=SuperSecret"),
            "s3://***@bucket/p?region=eu-west-1&secret=***"
        );
        assert_eq!(redact_location("/backups/repo"), "/backups/repo");
        assert_eq!(
            redact_location("s3://bucket/a@b?profile=x"),
            "s3://bucket/a@b?profile=x"
        );
    }
}
