//! Query-string parameters, percent-decoded.

/// The value of `name` in a query string, as ASP.NET Core reads it: names
/// match in any case (`NegotiateVersion`, `id`, `access_token` are all
/// looked up so), and a name given more than once stands for its values
/// joined with commas (`StringValues`' text), so `negotiateVersion=1&
/// negotiateVersion=1` is no integer and two `id`s name no connection.
pub(super) fn param(query: Option<&str>, name: &str) -> Option<String> {
    let mut values = query?.split('&').filter_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        decode(k).eq_ignore_ascii_case(name).then(|| decode(v))
    });
    let first = values.next()?;
    Some(values.fold(first, |mut joined, v| {
        joined.push(',');
        joined.push_str(&v);
        joined
    }))
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_decodes() {
        let q = Some("negotiateVersion=1&id=abc%2Fd&access_token=a+b&bad=%zz&end=%4");
        assert_eq!(param(q, "negotiateVersion").as_deref(), Some("1"));
        assert_eq!(param(q, "id").as_deref(), Some("abc/d"));
        assert_eq!(param(q, "access_token").as_deref(), Some("a b"));
        assert_eq!(param(q, "bad").as_deref(), Some("%zz"));
        assert_eq!(param(q, "end").as_deref(), Some("%4"));
        assert_eq!(param(q, "missing"), None);
        assert_eq!(param(Some("ID=x&NegotiateVersion=1"), "id").as_deref(), Some("x"), "names in any case");
        assert_eq!(param(Some("ID=x&NegotiateVersion=1"), "negotiateVersion").as_deref(), Some("1"));
        assert_eq!(param(None, "id"), None);
    }

    #[test]
    fn a_name_given_twice_stands_for_its_values_joined() {
        let q = Some("negotiateVersion=1&id=a&NegotiateVersion=1&x=&x=");
        assert_eq!(param(q, "negotiateVersion").as_deref(), Some("1,1"));
        assert_eq!(param(q, "id").as_deref(), Some("a"));
        assert_eq!(param(q, "x").as_deref(), Some(","));
    }
}
