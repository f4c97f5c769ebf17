//! Creating a user without the dashboard, for headless deployments (`monoize user create`).
//! It validates exactly as the default dashboard plugin does (usernames 3–22 of
//! `[A-Za-z0-9_]`, passwords of 8 to 1024 characters) and stores an argon2id hash.

use crate::db::users::{self, NewUser, Role, UserRow};
use crate::db::{Database, DbError};
use crate::plugins::crypto::{self, CryptoError};

/// The shortest and longest username.
pub const USERNAME_CHARS: std::ops::RangeInclusive<usize> = 3..=22;

/// The shortest and longest password.
pub const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=1024;

/// Why a user could not be created.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The username breaks the rule.
    #[error("username must be 3 to 22 characters of A-Z, a-z, 0-9 and _")]
    BadUsername,
    /// The password is too short or too long.
    #[error("password must be 8 to 1024 characters")]
    BadPassword,
    /// The username is taken.
    #[error("username `{0}` is taken")]
    Taken(String),
    /// The password could not be hashed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The database failed.
    #[error(transparent)]
    Database(DbError),
}

/// Whether `username` is 3–22 characters of `[A-Za-z0-9_]`.
pub fn valid_username(username: &str) -> bool {
    USERNAME_CHARS.contains(&username.len())
        && username
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

/// Whether `password` has 8 to 1024 characters.
pub fn valid_password(password: &str) -> bool {
    PASSWORD_CHARS.contains(&password.chars().count())
}

/// Creates an enabled user `username` with `role` and `password` (hashed with argon2id on a
/// blocking thread) and a zero balance.
pub async fn create_user(
    database: &Database,
    username: &str,
    password: &str,
    role: Role,
) -> Result<UserRow, BootstrapError> {
    if !valid_username(username) {
        return Err(BootstrapError::BadUsername);
    }
    if !valid_password(password) {
        return Err(BootstrapError::BadPassword);
    }
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || crypto::hash_password(&password))
        .await
        .map_err(|error| BootstrapError::Database(DbError::Internal(error.to_string())))??;
    let new = NewUser::new(username, &hash, role);
    database
        .write(move |tx| users::insert(tx, &new))
        .await
        .map_err(|error| match error {
            DbError::Conflict(_) => BootstrapError::Taken(username.to_owned()),
            other => BootstrapError::Database(other),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_and_passwords_follow_the_dashboard_rules() {
        for good in ["abc", "Admin_01", "a234567890123456789012"] {
            assert!(valid_username(good), "{good}");
        }
        for bad in [
            "ab",
            "a2345678901234567890123",
            "bad-name",
            "é_abc",
            "with space",
            "",
        ] {
            assert!(!valid_username(bad), "{bad}");
        }
        assert!(valid_password("12345678"));
        assert!(!valid_password("1234567"));
        assert!(!valid_password(&"x".repeat(1025)));
    }

    #[tokio::test]
    async fn a_created_user_verifies_and_a_duplicate_is_taken() {
        let db = Database::open_in_memory().unwrap();
        let user = create_user(&db, "root", "s3cret-pass", Role::SuperAdmin)
            .await
            .unwrap();
        assert_eq!(user.role, Role::SuperAdmin);
        assert!(crypto::verify_password("s3cret-pass", &user.password_hash));
        let again = create_user(&db, "root", "another-pass", Role::User).await;
        assert!(matches!(again, Err(BootstrapError::Taken(name)) if name == "root"));
        assert!(matches!(
            create_user(&db, "x", "s3cret-pass", Role::User).await,
            Err(BootstrapError::BadUsername)
        ));
        assert!(matches!(
            create_user(&db, "shorty", "short", Role::User).await,
            Err(BootstrapError::BadPassword)
        ));
    }
}
