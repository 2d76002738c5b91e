//! Reads the flat one-line JSON object that `loadgen --json` prints.

use std::collections::HashMap;

pub enum Value {
    Num(f64),
    Str,
    Null,
}

pub struct Object(HashMap<String, Value>);

impl Object {
    pub fn num(&self, key: &str) -> Option<f64> {
        match self.0.get(key) {
            Some(Value::Num(v)) => Some(*v),
            _ => None,
        }
    }
}

fn string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
    let mut s = String::new();
    loop {
        match chars.next()? {
            '"' => return Some(s),
            '\\' => s.push(chars.next()?),
            c => s.push(c),
        }
    }
}

/// Parses `{"key":value,...}` where each value is a number, a string or `null`.
pub fn parse(line: &str) -> Option<Object> {
    let mut map = HashMap::new();
    let mut chars = line.trim().chars().peekable();
    if chars.next()? != '{' {
        return None;
    }
    loop {
        match chars.next()? {
            '}' => return Some(Object(map)),
            ',' | ' ' => continue,
            '"' => {}
            _ => return None,
        }
        let key = string(&mut chars)?;
        if chars.next()? != ':' {
            return None;
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            string(&mut chars)?;
            Value::Str
        } else {
            let mut raw = String::new();
            while let Some(&c) = chars.peek() {
                if c == ',' || c == '}' {
                    break;
                }
                raw.push(c);
                chars.next();
            }
            match raw.trim() {
                "null" => Value::Null,
                t => Value::Num(t.parse().ok()?),
            }
        };
        map.insert(key, value);
    }
}
