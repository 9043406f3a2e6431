//! Store URLs with their secrets hidden, for messages and logs.

/// The mask that stands for a hidden secret.
const MASK: &str = "***";

/// `url` with its password, and the values of query parameters that look like secrets
/// (`password`, `sslpassword`, `secret`, `token`, `auth`, `pwd`, ...), replaced by `***`:
/// what to show of a store URL in a message, a log line or an error.
///
/// The user name, host, port, database and other parameters stay, so the message still
/// says which server was meant. Anything that is not a URL with credentials
/// (`memory`, `sqlite:bot.db`) comes back as it was. When the URL is malformed (an `@`
/// or `/` left unescaped in the password), more is hidden rather than less: everything
/// up to the last `@` after the user name.
///
/// ```
/// use stagecraft::store::redact_url;
///
/// assert_eq!(redact_url("postgres://bot:s3cret@db:5432/bot"), "postgres://bot:***@db:5432/bot");
/// assert_eq!(redact_url("redis://:s3cret@127.0.0.1:6379/0"), "redis://:***@127.0.0.1:6379/0");
/// assert_eq!(
///     redact_url("redis-cluster://:s3cret@10.0.0.1:7000,10.0.0.2:7000"),
///     "redis-cluster://:***@10.0.0.1:7000,10.0.0.2:7000"
/// );
/// assert_eq!(
///     redact_url("mysql://db/bot?user=bot&password=s3cret&ssl-mode=required"),
///     "mysql://db/bot?user=bot&password=***&ssl-mode=required"
/// );
/// assert_eq!(redact_url("sqlite:bot.db"), "sqlite:bot.db");
/// ```
#[must_use]
pub fn redact_url(url: &str) -> String {
    let (head, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(head);
    let mut tail = rest;
    if !head.is_empty() {
        // The last `@` ends the user information, even when an unescaped `@` or `/` in
        // the password would make a parser end it sooner: hide too much, never too little.
        if let Some(at) = rest.rfind('@') {
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, password)) if !password.is_empty() => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(MASK);
                }
                _ => out.push_str(userinfo),
            }
            out.push('@');
            tail = &rest[at + 1..];
        }
    }
    let Some((before, query)) = tail.split_once('?') else {
        out.push_str(tail);
        return out;
    };
    out.push_str(before);
    out.push('?');
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    for (i, param) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match param.split_once('=') {
            Some((name, value)) if is_secret(name) && !value.is_empty() => {
                out.push_str(name);
                out.push('=');
                out.push_str(MASK);
            }
            _ => out.push_str(param),
        }
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Does a query parameter of this name hold a secret?
fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "secret",
        "token",
        "auth",
        "key",
        "credential",
    ]
    .iter()
    .any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden_and_the_rest_stays() {
        let cases = [
            (
                "postgres://bot:hunter2@db.example:5432/bot",
                "postgres://bot:***@db.example:5432/bot",
            ),
            (
                "postgresql://bot:hunter2@/bot?host=/run/pg",
                "postgresql://bot:***@/bot?host=/run/pg",
            ),
            (
                "mysql://root:hunter2@127.0.0.1:3306/test",
                "mysql://root:***@127.0.0.1:3306/test",
            ),
            (
                "mariadb://root:hunter2@127.0.0.1/test",
                "mariadb://root:***@127.0.0.1/test",
            ),
            (
                "redis://:hunter2@127.0.0.1:6379",
                "redis://:***@127.0.0.1:6379",
            ),
            (
                "rediss://default:hunter2@cache:6380/2",
                "rediss://default:***@cache:6380/2",
            ),
            (
                "redis-cluster://:hunter2@10.0.0.1:7000,10.0.0.2:7000",
                "redis-cluster://:***@10.0.0.1:7000,10.0.0.2:7000",
            ),
            (
                "rediss-cluster://default:hunter2@a:7000,b:7000,c:7000",
                "rediss-cluster://default:***@a:7000,b:7000,c:7000",
            ),
            (
                "redis-cluster://bot:p@ss@a:7000,b:7000",
                "redis-cluster://bot:***@a:7000,b:7000",
            ),
            (
                "redis-cluster://127.0.0.1:7000,127.0.0.1:7001",
                "redis-cluster://127.0.0.1:7000,127.0.0.1:7001",
            ),
            // No password: nothing to hide.
            (
                "postgres://bot@127.0.0.1/bot",
                "postgres://bot@127.0.0.1/bot",
            ),
            (
                "postgres://bot:@127.0.0.1/bot",
                "postgres://bot:@127.0.0.1/bot",
            ),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("memory", "memory"),
            ("sqlite:demo.db", "sqlite:demo.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("", ""),
            // Unescaped `@`, `:`, `/` or `?` in the password: all of it is hidden.
            (
                "postgres://bot:p@ss:w/o?rd@db/bot",
                "postgres://bot:***@db/bot",
            ),
            // Secrets in the query.
            (
                "postgres://db/bot?user=bot&password=hunter2&sslmode=require",
                "postgres://db/bot?user=bot&password=***&sslmode=require",
            ),
            (
                "mysql://db/x?ssl-key=/k.pem&PASSWORD=hunter2#frag",
                "mysql://db/x?ssl-key=***&PASSWORD=***#frag",
            ),
            (
                "postgres://a:hunter2@db/x?sslpassword=hunter2&application_name=bot",
                "postgres://a:***@db/x?sslpassword=***&application_name=bot",
            ),
            (
                "sqlite:x.db?auth_token=hunter2",
                "sqlite:x.db?auth_token=***",
            ),
            ("sqlite:x.db?mode=ro&&=&x", "sqlite:x.db?mode=ro&&=&x"),
            // Not ASCII, not a problem.
            (
                "postgres://bøt:hünter2✓@høst/bøt",
                "postgres://bøt:***@høst/bøt",
            ),
        ];
        for (url, want) in cases {
            let got = redact_url(url);
            assert_eq!(got, want, "{url}");
            assert!(!got.contains("hunter2"), "{got}");
        }
    }

    #[test]
    fn odd_input_does_not_panic() {
        for url in [
            "://",
            ":///@",
            "@",
            "a://@",
            "a://:@",
            "a://?",
            "a://?=",
            "a://#?",
            "?#&=",
            "a://u:p@",
            "a://u:p@?password=",
            "a://u:p@@@",
            "✓://✓:✓@✓?✓=✓#✓",
        ] {
            let _ = redact_url(url);
        }
        assert_eq!(redact_url("a://u:p@"), "a://u:***@");
    }
}
