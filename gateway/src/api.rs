//! Request bodies and the field rules of docs/api.md. Bodies deserialize with every field optional, so
//! that a missing field is a 422 naming it, while a wrong JSON type stays a 400 from the decoder. What
//! passes becomes the validated input of a `Cluster` call.

use std::sync::LazyLock;

use actors::{NewUser, UserChanges};
use email_address::{EmailAddress, Options};
use playground_proto::{ApiError, FieldError, NewOrder, OrderItem, UserRecord};
use regex::Regex;
use serde::Deserialize;
use zxcvbn::{zxcvbn, Score};

/// zxcvbn's estimate below which a password is refused: a score of 3 takes about 10^8 guesses or more,
/// out of reach of an online attack and costly offline against argon2id.
const MIN_PASSWORD_SCORE: Score = Score::Three;

/// Controls (NUL among them) and format characters (zero-width spaces and joiners, direction overrides,
/// byte order marks): invisible, they would let two addresses that look the same be different accounts.
static INVISIBLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[\p{Cc}\p{Cf}]").expect("the pattern is a valid regular expression"));

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub email: Option<String>,
    pub name: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    pub email: Option<String>,
    pub name: Option<String>,
    pub password: Option<String>,
    pub current_password: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderRequest {
    pub items: Option<Vec<ItemRequest>>,
    pub currency: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemRequest {
    pub sku: Option<String>,
    pub quantity: Option<i64>,
    pub unit_price_cents: Option<i64>,
}

fn check_email(field: &str, email: &str, errors: &mut Vec<FieldError>) {
    if INVISIBLE.is_match(email) {
        errors.push(FieldError::new(field, "must not hold control, zero-width or other invisible characters"));
        return;
    }
    let e = email.trim();
    let rfc = Options::default().with_required_tld().without_domain_literal().without_display_text();
    let ok = EmailAddress::parse_with_options(e, rfc).is_ok()
        && e.chars().count() <= 254
        && e.matches('@').count() == 1
        && !e.chars().any(char::is_whitespace)
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if !ok {
        errors.push(FieldError::new(field, "must be an email address of at most 254 characters"));
    }
}

fn check_name(field: &str, name: &str, errors: &mut Vec<FieldError>) {
    let n = name.trim().chars().count();
    if !(1..=100).contains(&n) {
        errors.push(FieldError::new(field, "must be 1 to 100 characters after trimming"));
    }
}

fn check_password(field: &str, password: &str, errors: &mut Vec<FieldError>) {
    let n = password.chars().count();
    if !(8..=128).contains(&n) {
        errors.push(FieldError::new(field, "must be 8 to 128 characters"));
    }
}

/// Refuses a password that is easy to guess: common, a pattern or a sequence, or made of the account's
/// own email or name (`user_inputs`). Only for a password of an allowed length, which also bounds
/// zxcvbn's work.
fn check_strength(field: &str, password: &str, user_inputs: &[&str], errors: &mut Vec<FieldError>) {
    // The whole input, an email's local part, and each word: a password borrows "ada" and "lovelace"
    // from "ada.lovelace@example.com" as easily as the whole.
    let mut inputs: Vec<&str> = user_inputs.iter().map(|s| s.trim()).collect();
    inputs.extend(user_inputs.iter().filter_map(|s| s.trim().split_once('@')).map(|(local, _)| local));
    inputs.extend(user_inputs.iter().flat_map(|s| s.split(|c: char| !c.is_alphanumeric())));
    inputs.retain(|s| !s.is_empty());
    if zxcvbn(password, &inputs).score() < MIN_PASSWORD_SCORE {
        errors.push(FieldError::new(
            field,
            "is too easy to guess: use a longer passphrase of uncommon words, not a common password, a pattern, or your email or name",
        ));
    }
}

/// The strength rule for a new password of an existing account, judged against the account's email and
/// name, both as stored and as changed by the same request.
pub fn password_rules(changes: &UserChanges) -> impl FnOnce(&UserRecord, &str) -> Result<(), ApiError> + '_ {
    move |current, password| {
        let mut errors = vec![];
        let inputs = [
            current.email.as_str(),
            current.name.as_str(),
            changes.email.as_deref().unwrap_or_default(),
            changes.name.as_deref().unwrap_or_default(),
        ];
        check_strength("password", password, &inputs, &mut errors);
        finish(errors, || ())
    }
}

fn required<'a, T>(field: &str, value: &'a Option<T>, errors: &mut Vec<FieldError>) -> Option<&'a T> {
    if value.is_none() {
        errors.push(FieldError::new(field, "is required"));
    }
    value.as_ref()
}

fn finish<T>(errors: Vec<FieldError>, value: impl FnOnce() -> T) -> Result<T, ApiError> {
    if errors.is_empty() {
        Ok(value())
    } else {
        Err(ApiError::Validation(errors))
    }
}

impl CreateUserRequest {
    pub fn validate(self) -> Result<NewUser, ApiError> {
        let mut errors = vec![];
        if let Some(e) = required("email", &self.email, &mut errors) {
            check_email("email", e, &mut errors);
        }
        if let Some(n) = required("name", &self.name, &mut errors) {
            check_name("name", n, &mut errors);
        }
        if let Some(p) = required("password", &self.password, &mut errors) {
            check_password("password", p, &mut errors);
            if errors.iter().all(|e| e.field != "password") {
                let inputs = [self.email.as_deref().unwrap_or_default(), self.name.as_deref().unwrap_or_default()];
                check_strength("password", p, &inputs, &mut errors);
            }
        }
        finish(errors, || NewUser {
            email: self.email.unwrap_or_default().trim().to_owned(),
            name: self.name.unwrap_or_default().trim().to_owned(),
            password: self.password.unwrap_or_default(),
        })
    }
}

impl UpdateUserRequest {
    pub fn validate(self) -> Result<UserChanges, ApiError> {
        let mut errors = vec![];
        if let Some(e) = &self.email {
            check_email("email", e, &mut errors);
        }
        if let Some(n) = &self.name {
            check_name("name", n, &mut errors);
        }
        if let Some(p) = &self.password {
            check_password("password", p, &mut errors);
        }
        if self.email.is_none() && self.name.is_none() && self.password.is_none() {
            errors.push(FieldError::new("body", "names at least one of email, name, password"));
        }
        finish(errors, || UserChanges {
            email: self.email.map(|e| e.trim().to_owned()),
            name: self.name.map(|n| n.trim().to_owned()),
            password: self.password,
            current_password: self.current_password,
        })
    }
}

impl LoginRequest {
    /// Only presence is checked: a login must not reveal which rules an account's password follows.
    pub fn validate(self) -> Result<(String, String), ApiError> {
        let mut errors = vec![];
        required("email", &self.email, &mut errors);
        required("password", &self.password, &mut errors);
        finish(errors, || (self.email.unwrap_or_default(), self.password.unwrap_or_default()))
    }
}

fn valid_sku(sku: &str) -> bool {
    (1..=64).contains(&sku.len()) && sku.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl CreateOrderRequest {
    pub fn validate(self) -> Result<NewOrder, ApiError> {
        let mut errors = vec![];
        let mut items = vec![];
        if let Some(list) = required("items", &self.items, &mut errors) {
            if !(1..=100).contains(&list.len()) {
                errors.push(FieldError::new("items", "must hold 1 to 100 items"));
            }
            for (i, item) in list.iter().enumerate() {
                let at = |f: &str| format!("items[{i}].{f}");
                let sku = required(&at("sku"), &item.sku, &mut errors);
                if let Some(s) = sku {
                    if !valid_sku(s) {
                        errors.push(FieldError::new(at("sku"), "must be 1 to 64 of A-Z a-z 0-9 . _ -"));
                    }
                }
                let q = required(&at("quantity"), &item.quantity, &mut errors);
                if let Some(q) = q {
                    if !(1..=1000).contains(q) {
                        errors.push(FieldError::new(at("quantity"), "must be an integer from 1 to 1000"));
                    }
                }
                let p = required(&at("unit_price_cents"), &item.unit_price_cents, &mut errors);
                if let Some(p) = p {
                    if !(0..=100_000_000).contains(p) {
                        errors.push(FieldError::new(at("unit_price_cents"), "must be an integer from 0 to 100000000"));
                    }
                }
                if let (Some(s), Some(q), Some(p)) = (sku, q, p) {
                    items.push(OrderItem { sku: s.clone(), quantity: *q, unit_price_cents: *p });
                }
            }
        }
        if let Some(c) = &self.currency {
            if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                errors.push(FieldError::new("currency", "must be three upper-case letters"));
            }
        }
        finish(errors, || NewOrder { items, currency: self.currency.unwrap_or_else(|| "EUR".to_owned()) })
    }
}

/// `Idempotency-Key`: 1 to 128 visible ASCII characters.
pub fn validate_idempotency_key(key: &str) -> Result<(), ApiError> {
    if (1..=128).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ApiError::BadRequest("Idempotency-Key must be 1 to 128 visible ASCII characters".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(e: ApiError) -> Vec<String> {
        match e {
            ApiError::Validation(list) => list.into_iter().map(|f| f.field).collect(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn emails_follow_the_rules() {
        for good in ["a@b.co", "  Alice@Example.com ", "x.y+z@sub.example.org"] {
            let r = CreateUserRequest {
                email: Some(good.into()),
                name: Some("A".into()),
                password: Some("plum anchor velvet 42".into()),
            };
            assert!(r.validate().is_ok(), "{good}");
        }
        for bad in ["", "ab.co", "a@@b.co", "a@b", "@b.co", "a@", "a b@c.de", &format!("{}@b.co", "a".repeat(250))] {
            let r = CreateUserRequest {
                email: Some(bad.into()),
                name: Some("A".into()),
                password: Some("plum anchor velvet 42".into()),
            };
            assert_eq!(fields(r.validate().expect_err(bad)), vec!["email"], "{bad}");
        }
    }

    #[test]
    fn invisible_characters_never_pass_in_an_email() {
        for bad in [
            "a\u{200B}b@example.com",
            "ab@exa\u{200D}mple.com",
            "a\0b@example.com",
            "\u{FEFF}ab@example.com",
            "ab@example.com\u{202E}",
            "a\u{7}b@example.com",
            "ab@example.com\n",
            "a\u{AD}b@example.com",
        ] {
            let r = CreateUserRequest {
                email: Some(bad.into()),
                name: Some("A".into()),
                password: Some("plum anchor velvet 42".into()),
            };
            assert_eq!(fields(r.validate().expect_err(bad)), vec!["email"], "{bad:?}");
        }
    }

    #[test]
    fn weak_passwords_are_refused_and_strong_ones_pass() {
        let with = |email: &str, name: &str, password: &str| CreateUserRequest {
            email: Some(email.into()),
            name: Some(name.into()),
            password: Some(password.into()),
        };
        for weak in ["12345678", "password", "password1", "qwertyuiop", "iloveyou", "aaaaaaaaaaaa", "abcdefgh12"] {
            let r = with("ada@example.com", "Ada", weak);
            assert_eq!(fields(r.validate().expect_err(weak)), vec!["password"], "{weak}");
        }
        let own = with("margaret.hamilton@example.com", "Margaret Hamilton", "margaret.hamilton");
        assert_eq!(fields(own.validate().expect_err("own name")), vec!["password"]);
        for strong in ["plum anchor velvet 42", "correct horse battery", "Tr0ub4dor&3-kayak-mist"] {
            assert!(with("ada@example.com", "Ada", strong).validate().is_ok(), "{strong}");
        }
        let current = UserRecord {
            id: "u".into(),
            email: "grace.hopper@example.com".into(),
            name: "Grace Hopper".into(),
            password_hash: String::new(),
            created_at: 0,
            updated_at: 0,
            version: 1,
        };
        let changes = UserChanges::default();
        assert!(password_rules(&changes)(&current, "gracehopper").is_err(), "the stored name counts");
        assert!(password_rules(&changes)(&current, "plum anchor velvet 42").is_ok());
    }

    #[test]
    fn every_failing_field_is_named() {
        let r = CreateUserRequest { email: None, name: Some("   ".into()), password: Some("short".into()) };
        assert_eq!(fields(r.validate().expect_err("invalid")), vec!["email", "name", "password"]);
        let r = UpdateUserRequest::default();
        assert_eq!(fields(r.validate().expect_err("empty patch")), vec!["body"]);
    }

    #[test]
    fn orders_follow_the_rules() {
        let item = |sku: &str, q: i64, p: i64| ItemRequest {
            sku: Some(sku.into()),
            quantity: Some(q),
            unit_price_cents: Some(p),
        };
        let ok = CreateOrderRequest { items: Some(vec![item("A-1", 2, 150), item("b.2_x", 1000, 0)]), currency: None };
        let order = ok.validate().expect("valid");
        assert_eq!(order.currency, "EUR");
        assert_eq!(order.total_cents(), 300);
        let bad = CreateOrderRequest {
            items: Some(vec![item("ok", 1, 1), item("bad sku", 0, 100_000_001), ItemRequest::default()]),
            currency: Some("eur".into()),
        };
        assert_eq!(
            fields(bad.validate().expect_err("invalid")),
            vec![
                "items[1].sku",
                "items[1].quantity",
                "items[1].unit_price_cents",
                "items[2].sku",
                "items[2].quantity",
                "items[2].unit_price_cents",
                "currency"
            ]
        );
        let empty = CreateOrderRequest { items: Some(vec![]), currency: None };
        assert_eq!(fields(empty.validate().expect_err("empty")), vec!["items"]);
        let many = CreateOrderRequest { items: Some((0..101).map(|_| item("a", 1, 1)).collect()), currency: None };
        assert_eq!(fields(many.validate().expect_err("too many")), vec!["items"]);
    }

    #[test]
    fn fingerprints_tell_bodies_apart() {
        let a = NewOrder {
            items: vec![OrderItem { sku: "a".into(), quantity: 1, unit_price_cents: 2 }],
            currency: "EUR".into(),
        };
        let mut b = a.clone();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.items[0].quantity = 2;
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert!(validate_idempotency_key("abc-123").is_ok());
        assert!(validate_idempotency_key("").is_err());
        assert!(validate_idempotency_key("has space").is_err());
        assert!(validate_idempotency_key(&"k".repeat(129)).is_err());
        assert!(validate_idempotency_key("é").is_err());
    }
}
