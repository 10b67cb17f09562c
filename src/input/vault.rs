//! ansible-vault, as Ansible documents it: `$ANSIBLE_VAULT;1.1;AES256` and
//! `1.2;AES256;<vault id>` envelopes around hex of `salt \n hmac \n
//! ciphertext`; PBKDF2-HMAC-SHA256 (10 000 rounds) derives 80 bytes: the
//! AES-256 key, the HMAC-SHA256 key and the CTR counter's start. Whole
//! encrypted files and `!vault |` values are decrypted while inputs load;
//! every decrypted value is a secret (the redactor learns them).

use std::sync::{Mutex, OnceLock};

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{KeyInit, Mac};

/// A vault password and the vault id it is for (None: any).
#[derive(Clone)]
pub struct Secret {
    pub id: Option<String>,
    pub password: String,
}

static SECRETS: OnceLock<Vec<Secret>> = OnceLock::new();
static DECRYPTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Sets the passwords of this run, once, before any input is read.
pub fn set_secrets(secrets: Vec<Secret>) {
    let _ = SECRETS.set(secrets);
}

/// Every value decrypted so far, for the redactor.
pub fn decrypted() -> Vec<String> {
    DECRYPTED.lock().expect("vault values").clone()
}

/// `text` with every value decrypted so far replaced (for errors printed
/// outside the report, which has its own redactor).
pub fn scrub(text: &str) -> String {
    let mut r = crate::secrets::Redactor::default();
    for v in decrypted() {
        r.add(&v);
    }
    r.scrub(text)
}

/// Whether `text` is a vault envelope.
pub fn is_vault(text: &str) -> bool {
    text.trim_start().starts_with("$ANSIBLE_VAULT;")
}

/// Decrypts an envelope with the run's passwords.
pub fn decrypt(text: &str) -> Result<String, String> {
    let secrets = SECRETS.get().map(Vec::as_slice).unwrap_or_default();
    if secrets.is_empty() {
        return Err("it holds ansible-vault data, and no vault password was given (--ask-vault-pass, --vault-password-file, --vault-id, or vault_password_file in ansible.cfg)".into());
    }
    let plain = decrypt_with(text, secrets)?;
    let mut found = DECRYPTED.lock().expect("vault values");
    found.push(plain.trim_end_matches('\n').to_owned());
    // A whole vars file: every value in it is a secret too, however deep
    // (`creds.password`, a list item).
    if let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(&plain) {
        leaves(&doc, &mut found);
    }
    Ok(plain)
}

/// Every scalar of a decrypted document, nested mappings and lists included.
fn leaves(v: &serde_yaml::Value, out: &mut Vec<String>) {
    match v {
        serde_yaml::Value::String(s) => out.push(s.clone()),
        serde_yaml::Value::Number(n) => out.push(n.to_string()),
        serde_yaml::Value::Sequence(items) => items.iter().for_each(|i| leaves(i, out)),
        serde_yaml::Value::Mapping(m) => m.values().for_each(|i| leaves(i, out)),
        serde_yaml::Value::Tagged(t) => leaves(&t.value, out),
        _ => {}
    }
}

/// Decrypts with the given passwords: the one of the envelope's vault id
/// first, then every other (as ansible-vault tries them).
pub fn decrypt_with(text: &str, secrets: &[Secret]) -> Result<String, String> {
    let mut lines = text.trim().lines();
    let header = lines.next().unwrap_or_default().trim();
    let fields: Vec<&str> = header.split(';').collect();
    let id = match fields[..] {
        ["$ANSIBLE_VAULT", "1.1", "AES256"] => None,
        ["$ANSIBLE_VAULT", "1.2", "AES256", id] => Some(id),
        _ => {
            return Err(format!(
                "`{header}` is not an ansible-vault AES256 header (1.1 or 1.2)"
            ));
        }
    };
    let body: String = lines.map(str::trim).collect();
    let inner = hex(&body).ok_or("the vault data is not hex")?;
    let inner = String::from_utf8(inner).map_err(|_| "the vault data is damaged")?;
    let mut parts = inner.lines();
    let (Some(salt), Some(mac), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("the vault data is damaged (expected salt, hmac and ciphertext)".into());
    };
    let (salt, mac, data) = (
        hex(salt).ok_or("bad salt")?,
        hex(mac).ok_or("bad hmac")?,
        hex(data).ok_or("bad ciphertext")?,
    );
    let mut order: Vec<&Secret> = secrets
        .iter()
        .filter(|s| id.is_some() && s.id.as_deref() == id)
        .collect();
    order.extend(
        secrets
            .iter()
            .filter(|s| !(id.is_some() && s.id.as_deref() == id)),
    );
    for secret in order {
        let mut derived = [0u8; 80];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
            secret.password.as_bytes(),
            &salt,
            10_000,
            &mut derived,
        );
        let (key, rest) = derived.split_at(32);
        let (hmac_key, iv) = rest.split_at(32);
        let mut check = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(hmac_key)
            .expect("HMAC takes any key length");
        check.update(&data);
        if check.verify_slice(&mac).is_err() {
            continue;
        }
        let mut plain = data.clone();
        let mut cipher =
            ctr::Ctr128BE::<aes::Aes256>::new_from_slices(key, iv).map_err(|_| "bad key length")?;
        cipher.apply_keystream(&mut plain);
        // PKCS#7 padding, as Ansible adds it.
        let pad = *plain.last().ok_or("empty vault data")? as usize;
        if pad == 0 || pad > 16 || pad > plain.len() {
            return Err("the vault data is damaged (bad padding)".into());
        }
        plain.truncate(plain.len() - pad);
        return String::from_utf8(plain)
            .map_err(|_| "the decrypted vault data is not UTF-8".into());
    }
    Err(match id {
        Some(id) => {
            format!(
                "none of the vault passwords given decrypts it (vault id `{id}`): a wrong password?"
            )
        }
        None => "the vault password does not decrypt it: a wrong password?".into(),
    })
}

fn hex(s: &str) -> Option<Vec<u8>> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(s.trim().as_bytes())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/vault/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// Files made by the real `ansible-vault` (tests/fixtures/vault/README.md).
    #[test]
    fn decrypts_what_ansible_vault_made_and_refuses_a_wrong_password() {
        let right = [Secret {
            id: None,
            password: fixture("password").trim().to_owned(),
        }];
        let plain = decrypt_with(&fixture("vars-1.1.yml"), &right).unwrap();
        assert!(
            plain.contains("k3s_token: K10vaulted::server:s3cret"),
            "{plain}"
        );
        let wrong = [Secret {
            id: None,
            password: "nope".into(),
        }];
        assert!(
            decrypt_with(&fixture("vars-1.1.yml"), &wrong)
                .unwrap_err()
                .contains("wrong password")
        );
        let labelled = [
            Secret {
                id: Some("dev".into()),
                password: "other".into(),
            },
            Secret {
                id: Some("prod".into()),
                password: fixture("password").trim().to_owned(),
            },
        ];
        let plain = decrypt_with(&fixture("value-1.2.txt"), &labelled).unwrap();
        assert_eq!(plain, "s3cret-become-pw");
        assert!(decrypt_with("$ANSIBLE_VAULT;9.9;AES256\nab\n", &right).is_err());
    }
}
