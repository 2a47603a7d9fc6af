//! Reading a request target's query string and percent-encoded parts: the
//! one reading every route uses (`api::route`, `Layout::of`), so that
//! `?since=`, `?limit=`, the flags and `Last-Event-ID` agree on what a
//! number, a flag and a repeated parameter are. Pure; runs on the `http-N`
//! workers.
//!
//! The rules: pairs are split at `&`, a pair without `=` has an empty
//! value, keys are compared as written (not decoded), parameters a route
//! does not know are ignored, and of a repeated parameter every value must
//! be valid and the last one counts. A number is ASCII digits only: no
//! sign, no spaces, not empty, at most `u64::MAX`.

use super::ApiError;

/// A query string (what follows the first `?` of the target, without it).
#[derive(Clone, Copy, Debug)]
pub(super) struct Query<'a>(&'a str);

impl<'a> Query<'a> {
    /// The query of a request target; empty when it has none.
    pub(super) fn of_url(url: &'a str) -> Query<'a> {
        Query(url.split_once('?').map_or("", |(_, query)| query))
    }

    /// Is `key` there at all, with any value or none?
    pub(super) fn has(self, key: &str) -> bool {
        self.values(key).next().is_some()
    }

    /// The last value of `key` read by `parse`; None without `key`. Every
    /// value of a repeated `key` is read, so `?limit=x&limit=5` is 400.
    pub(super) fn last<T>(
        self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, ApiError>,
    ) -> Result<Option<T>, ApiError> {
        let mut last = None;
        for value in self.values(key) {
            last = Some(parse(value)?);
        }
        Ok(last)
    }

    /// A boolean flag: `?name`, `?name=true` and `?name=1` set it,
    /// `?name=false` and `?name=0` (or no `name`) leave it unset, anything
    /// else is 400.
    pub(super) fn flag(self, key: &str) -> Result<bool, ApiError> {
        let value = self.last(key, |value| match value {
            "" | "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(ApiError::BadRequest(format!(
                "bad {key} {value:?}: use true or false"
            ))),
        })?;
        Ok(value.unwrap_or(false))
    }

    /// The values of `key`, raw (not decoded), in order.
    fn values(self, key: &'a str) -> impl Iterator<Item = &'a str> {
        self.0.split('&').filter_map(move |pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name == key).then_some(value)
        })
    }
}

/// A whole number, digits only: `+5`, `-1`, ` 5`, `` and anything past
/// `u64::MAX` are 400, named as `what` with `hint` saying what to send.
pub(super) fn number(value: &str, what: &str, hint: &str) -> Result<u64, ApiError> {
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(ApiError::BadRequest(format!(
            "bad {what} {value:?}: {hint}"
        )));
    }
    value.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "bad {what} {value:?}: larger than {}; {hint}",
            u64::MAX
        ))
    })
}

/// A percent-decoded value (a path segment or a query value), named as
/// `what` in the error. `+` stays `+` (ids such as "normalload-u+600"
/// exist); `%` must be followed by two hex digits, and the result must be
/// UTF-8.
pub(super) fn percent_decoded(value: &str, what: &str) -> Result<String, ApiError> {
    let bad = || ApiError::BadRequest(format!("bad percent-encoding in {what} {value:?}"));
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        if bytes[idx] == b'%' {
            let hex = bytes.get(idx + 1..idx + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            if !hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                return Err(bad());
            }
            decoded.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            idx += 3;
        } else {
            decoded.push(bytes[idx]);
            idx += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `expected` is what `read` makes of the query (its value or the 400
    /// message).
    #[track_caller]
    fn check(
        query: &str,
        read: impl Fn(Query) -> Result<String, ApiError>,
        expected: Result<&str, &str>,
    ) {
        let url = format!("/client/task?{query}");
        let actual = read(Query::of_url(&url)).map_err(|err| {
            assert_eq!(err.status(), 400, "{query}");
            err.message()
        });
        assert_eq!(
            actual.as_deref(),
            expected.map_err(str::to_string).as_deref(),
            "{query}"
        );
    }

    #[test]
    fn reading_a_query() {
        let limit = |query: Query| {
            let limit = query.last("limit", |value| number(value, "limit", "use a number"))?;
            Ok(format!("{limit:?}"))
        };
        check("", limit, Ok("None"));
        check("limit=5", limit, Ok("Some(5)"));
        check("limit=007", limit, Ok("Some(7)"));
        check("a=b&limit=1&limit=2", limit, Ok("Some(2)"));
        check("limits=5&xlimit=6", limit, Ok("None"));
        check(
            "limit=18446744073709551615",
            limit,
            Ok("Some(18446744073709551615)"),
        );
        check("limit=+5", limit, Err("bad limit \"+5\": use a number"));
        check("limit=-1", limit, Err("bad limit \"-1\": use a number"));
        check("limit=", limit, Err("bad limit \"\": use a number"));
        check("limit", limit, Err("bad limit \"\": use a number"));
        check("limit=%35", limit, Err("bad limit \"%35\": use a number"));
        check("limit=5 ", limit, Err("bad limit \"5 \": use a number"));
        check("limit=0x5", limit, Err("bad limit \"0x5\": use a number"));
        check(
            "limit=x&limit=5",
            limit,
            Err("bad limit \"x\": use a number"),
        );
        check(
            "limit=18446744073709551616",
            limit,
            Err("bad limit \"18446744073709551616\": larger than 18446744073709551615; use a number"),
        );

        let flag = |query: Query| Ok(query.flag("dry_run")?.to_string());
        check("", flag, Ok("false"));
        check("dry_run", flag, Ok("true"));
        check("dry_run=", flag, Ok("true"));
        check("dry_run=1", flag, Ok("true"));
        check("dry_run=true&dry_run=0", flag, Ok("false"));
        check("dry_runs=1", flag, Ok("false"));
        check(
            "dry_run=yes",
            flag,
            Err("bad dry_run \"yes\": use true or false"),
        );

        let has = |query: Query| Ok(query.has("pretty").to_string());
        check("pretty", has, Ok("true"));
        check("a&pretty=no", has, Ok("true"));
        check("prettyish", has, Ok("false"));

        let prefix = |query: Query| {
            Ok(format!(
                "{:?}",
                query.last("prefix", |value| percent_decoded(value, "prefix"))?
            ))
        };
        check("prefix=u+600", prefix, Ok("Some(\"u+600\")"));
        check("prefix=my%20web", prefix, Ok("Some(\"my web\")"));
        check("prefix=%C3%A9", prefix, Ok("Some(\"é\")"));
        check("prefix=%20", prefix, Ok("Some(\" \")"));
        check("prefix=", prefix, Ok("Some(\"\")"));
        check(
            "prefix=%zz",
            prefix,
            Err("bad percent-encoding in prefix \"%zz\""),
        );
        check(
            "prefix=%4",
            prefix,
            Err("bad percent-encoding in prefix \"%4\""),
        );
        check(
            "prefix=%+1",
            prefix,
            Err("bad percent-encoding in prefix \"%+1\""),
        );
        check(
            "prefix=%e9",
            prefix,
            Err("bad percent-encoding in prefix \"%e9\""),
        );
    }
}
