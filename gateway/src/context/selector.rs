//! Owns label selectors in the API server's string form (`app=web,tier notin (db),!canary`):
//! parsing them as `labels.Parse` of k8s.io/apimachinery does, and matching labels. No I/O.

use std::collections::BTreeMap;

use crate::config::names;

/// A parsed selector: every requirement must hold. Empty: everything matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

/// One requirement on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key=v`, `key==v`, `key in (a,b)`
    In(Vec<String>),
    /// `key!=v`, `key notin (a,b)`: also true when the key is absent.
    NotIn(Vec<String>),
    /// `key>n`: present, an integer, greater.
    Gt(i64),
    /// `key<n`: present, an integer, less.
    Lt(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Comma,
    Open,
    Close,
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
}

fn lex(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            ',' | '(' | ')' | '<' | '>' => {
                chars.next();
                tokens.push(match c {
                    ',' => Token::Comma,
                    '(' => Token::Open,
                    ')' => Token::Close,
                    '<' => Token::Lt,
                    _ => Token::Gt,
                });
            }
            '=' => {
                chars.next();
                if chars.peek().is_some_and(|&(_, c)| c == '=') {
                    chars.next();
                    tokens.push(Token::DoubleEq);
                } else {
                    tokens.push(Token::Eq);
                }
            }
            '!' => {
                chars.next();
                if chars.peek().is_some_and(|&(_, c)| c == '=') {
                    chars.next();
                    tokens.push(Token::NotEq);
                } else {
                    tokens.push(Token::Not);
                }
            }
            _ => {
                let start = i;
                let mut end = text.len();
                while let Some(&(j, c)) = chars.peek() {
                    if c.is_whitespace() || ",()<>=!".contains(c) {
                        end = j;
                        break;
                    }
                    chars.next();
                }
                tokens.push(Token::Ident(text[start..end].to_owned()));
            }
        }
    }
    Ok(tokens)
}

impl Selector {
    /// Parses `text`; the error says what is wrong and where, as the API server would refuse it.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let tokens = lex(text)?;
        let mut at = 0;
        let mut requirements = Vec::new();
        if tokens.is_empty() {
            return Ok(Selector::default());
        }
        loop {
            requirements.push(requirement(&tokens, &mut at)?);
            match tokens.get(at) {
                None => break,
                Some(Token::Comma) => {
                    at += 1;
                    if at == tokens.len() {
                        return Err("a requirement must follow ','".into());
                    }
                }
                Some(t) => return Err(format!("found {}, expected ','", show(t))),
            }
        }
        // The API server sorts requirements by key; matching does not depend on the order.
        Ok(Selector(requirements))
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| {
            let value = labels.get(&r.key);
            match &r.op {
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
                Op::In(values) => value.is_some_and(|v| values.contains(v)),
                Op::NotIn(values) => !value.is_some_and(|v| values.contains(v)),
                Op::Gt(n) => value
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                Op::Lt(n) => value
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn show(token: &Token) -> String {
    match token {
        Token::Ident(s) => format!("{s:?}"),
        Token::Comma => "','".into(),
        Token::Open => "'('".into(),
        Token::Close => "')'".into(),
        Token::Not => "'!'".into(),
        Token::Eq => "'='".into(),
        Token::DoubleEq => "'=='".into(),
        Token::NotEq => "'!='".into(),
        Token::Gt => "'>'".into(),
        Token::Lt => "'<'".into(),
    }
}

fn key(tokens: &[Token], at: &mut usize) -> Result<String, String> {
    match tokens.get(*at) {
        Some(Token::Ident(k)) => {
            *at += 1;
            names::qualified_name(k).map_err(|m| format!("key {k:?}: {m}"))?;
            Ok(k.clone())
        }
        Some(t) => Err(format!("found {}, expected a label key", show(t))),
        None => Err("expected a label key".into()),
    }
}

fn value(tokens: &[Token], at: &mut usize) -> Result<String, String> {
    let v = match tokens.get(*at) {
        Some(Token::Ident(v)) => {
            *at += 1;
            v.clone()
        }
        // `key=` selects the empty value.
        None | Some(Token::Comma) => String::new(),
        Some(t) => return Err(format!("found {}, expected a label value", show(t))),
    };
    names::label_value(&v).map_err(|m| format!("value {v:?}: {m}"))?;
    Ok(v)
}

fn requirement(tokens: &[Token], at: &mut usize) -> Result<Requirement, String> {
    if tokens.get(*at) == Some(&Token::Not) {
        *at += 1;
        let key = key(tokens, at)?;
        return Ok(Requirement {
            key,
            op: Op::DoesNotExist,
        });
    }
    let key = key(tokens, at)?;
    let op = match tokens.get(*at) {
        None | Some(Token::Comma) => Op::Exists,
        Some(Token::Eq | Token::DoubleEq) => {
            *at += 1;
            Op::In(vec![value(tokens, at)?])
        }
        Some(Token::NotEq) => {
            *at += 1;
            Op::NotIn(vec![value(tokens, at)?])
        }
        Some(t @ (Token::Gt | Token::Lt)) => {
            let gt = *t == Token::Gt;
            *at += 1;
            let v = value(tokens, at)?;
            let n = v
                .parse::<i64>()
                .map_err(|_| format!("for '<' and '>', the value must be an integer, not {v:?}"))?;
            if gt { Op::Gt(n) } else { Op::Lt(n) }
        }
        Some(Token::Ident(word)) if word == "in" || word == "notin" => {
            let notin = word == "notin";
            *at += 1;
            if tokens.get(*at) != Some(&Token::Open) {
                return Err(format!("expected '(' after {word}"));
            }
            *at += 1;
            let mut values = Vec::new();
            loop {
                match tokens.get(*at) {
                    Some(Token::Close) if values.is_empty() => {
                        return Err(format!("for {word}, the set of values must not be empty"));
                    }
                    Some(Token::Ident(_)) => values.push(value(tokens, at)?),
                    // `in (a,,b)` and `in (,a)` hold the empty value, as upstream.
                    Some(Token::Comma | Token::Close) => values.push(String::new()),
                    Some(t) => return Err(format!("found {}, expected a label value", show(t))),
                    None => return Err("expected ')'".into()),
                }
                match tokens.get(*at) {
                    Some(Token::Comma) => *at += 1,
                    Some(Token::Close) => {
                        *at += 1;
                        break;
                    }
                    Some(t) => return Err(format!("found {}, expected ',' or ')'", show(t))),
                    None => return Err("expected ')'".into()),
                }
            }
            if notin {
                Op::NotIn(values)
            } else {
                Op::In(values)
            }
        }
        Some(t) => {
            return Err(format!(
                "found {} after key {key:?}, expected an operator (=, ==, !=, in, notin, <, >) or ','",
                show(t)
            ));
        }
    };
    Ok(Requirement { key, op })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_operator_matches_as_the_api_server_does() {
        let web = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        let db = labels(&[("app", "db")]);
        for (selector, on_web, on_db) in [
            ("", true, true),
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("tier!=front", false, true), // absent counts as different
            ("app in (web, api)", true, false),
            ("app notin (web)", false, true),
            ("tier notin (back)", true, true),
            ("tier", true, false),
            ("!tier", false, true),
            ("app=web,tier=front", true, false),
            ("  app = web , !canary ", true, false),
            ("n>4", true, false),
            ("n<4", false, false),
            ("example.com/team", false, false),
            ("tier=", false, false),
            ("tier in (front,)", true, false),
        ] {
            let s = Selector::parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
            assert_eq!(s.matches(&web), on_web, "{selector} on web");
            assert_eq!(s.matches(&db), on_db, "{selector} on db");
        }
    }

    #[test]
    fn malformed_selectors_are_refused_with_the_reason() {
        for (selector, reason) in [
            ("app=", ""),
            ("app in web", "expected '(' after in"),
            ("app in ()", "must not be empty"),
            ("app in (web", "expected ')'"),
            ("app=web,", "a requirement must follow ','"),
            ("-app=web", "key \"-app\""),
            ("app=we b", "found \"b\", expected ','"),
            ("app=-web", "value \"-web\""),
            ("n>x", "must be an integer"),
            ("app web", "expected an operator"),
            ("=web", "expected a label key"),
            ("!", "expected a label key"),
        ] {
            let result = Selector::parse(selector);
            if reason.is_empty() {
                assert!(result.is_ok(), "{selector}: {result:?}");
            } else {
                let e = result.expect_err(selector);
                assert!(e.contains(reason), "{selector}: {e}");
            }
        }
    }
}
