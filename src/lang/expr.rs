//! The small expression language of `when:`: variables, literals,
//! comparisons, `in`, `is defined`, `and`, `or`, `not`, parentheses.
//! Deliberately not Jinja: what it cannot express is an error, not a surprise.

use serde_json::Value;

use crate::lang::error::LangError;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(Value),
    Var(Vec<String>),
    List(Vec<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Box<Expr>, Op, Box<Expr>),
    Defined(Vec<String>, bool),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(String),
    Num(f64),
    Ident(String),
    Sym(&'static str),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let end = chars[i + 1..]
                .iter()
                .position(|&d| d == c)
                .ok_or_else(|| format!("unterminated string starting at column {}", i + 1))?;
            out.push(Tok::Str(chars[i + 1..i + 1 + end].iter().collect()));
            i += end + 2;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            out.push(Tok::Num(
                text.parse().map_err(|_| format!("bad number `{text}`"))?,
            ));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let sym = ["==", "!=", "<=", ">="]
                .into_iter()
                .find(|s| *s == two)
                .or_else(|| {
                    ["<", ">", "(", ")", "[", "]", ","]
                        .into_iter()
                        .find(|s| s.starts_with(c))
                })
                .ok_or_else(|| format!("unexpected `{c}` at column {}", i + 1))?;
            i += sym.len();
            out.push(Tok::Sym(sym));
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(x)) if x == w)
    }

    fn sym(&self, s: &str) -> bool {
        matches!(self.peek(), Some(Tok::Sym(x)) if *x == s)
    }

    fn expect_sym(&mut self, s: &str) -> Result<(), String> {
        if self.sym(s) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected `{s}`"))
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        self.chain("or", Parser::and, Expr::Or)
    }

    fn and(&mut self) -> Result<Expr, String> {
        self.chain("and", Parser::not, Expr::And)
    }

    /// `operand (word operand)*`, joined from the left.
    fn chain(
        &mut self,
        word: &str,
        operand: fn(&mut Self) -> Result<Expr, String>,
        join: fn(Box<Expr>, Box<Expr>) -> Expr,
    ) -> Result<Expr, String> {
        let mut left = operand(self)?;
        while self.word(word) {
            self.pos += 1;
            left = join(Box::new(left), Box::new(operand(self)?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.word("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<Expr, String> {
        let left = self.atom()?;
        if self.word("is") {
            self.pos += 1;
            let negate = self.word("not");
            if negate {
                self.pos += 1;
            }
            if !self.word("defined") {
                return Err("only `is defined` and `is not defined` are supported".into());
            }
            self.pos += 1;
            let Expr::Var(path) = left else {
                return Err("`is defined` needs a variable name on its left".into());
            };
            return Ok(Expr::Defined(path, !negate));
        }
        let op = match self.peek() {
            Some(Tok::Sym("==")) => Op::Eq,
            Some(Tok::Sym("!=")) => Op::Ne,
            Some(Tok::Sym("<")) => Op::Lt,
            Some(Tok::Sym("<=")) => Op::Le,
            Some(Tok::Sym(">")) => Op::Gt,
            Some(Tok::Sym(">=")) => Op::Ge,
            Some(Tok::Ident(w)) if w == "in" => Op::In,
            Some(Tok::Ident(w))
                if w == "not"
                    && matches!(self.toks.get(self.pos + 1), Some(Tok::Ident(x)) if x == "in") =>
            {
                self.pos += 1;
                Op::NotIn
            }
            _ => return Ok(left),
        };
        self.pos += 1;
        let right = self.atom()?;
        Ok(Expr::Compare(Box::new(left), op, Box::new(right)))
    }

    fn atom(&mut self) -> Result<Expr, String> {
        let tok = self.peek().cloned().ok_or("unexpected end of expression")?;
        self.pos += 1;
        match tok {
            Tok::Str(s) => Ok(Expr::Literal(Value::String(s))),
            Tok::Num(n) => Ok(Expr::Literal(number(n))),
            Tok::Ident(w) => Ok(match w.as_str() {
                "true" | "True" => Expr::Literal(Value::Bool(true)),
                "false" | "False" => Expr::Literal(Value::Bool(false)),
                "none" | "None" | "null" => Expr::Literal(Value::Null),
                "and" | "or" | "in" | "is" => return Err(format!("unexpected `{w}`")),
                _ => Expr::Var(w.split('.').map(str::to_owned).collect()),
            }),
            Tok::Sym("(") => {
                let e = self.or()?;
                self.expect_sym(")")?;
                Ok(e)
            }
            Tok::Sym("[") => {
                let mut items = Vec::new();
                while !self.sym("]") {
                    items.push(self.or()?);
                    if !self.sym("]") {
                        self.expect_sym(",")?;
                    }
                }
                self.pos += 1;
                Ok(Expr::List(items))
            }
            Tok::Sym(s) => Err(format!("unexpected `{s}`")),
        }
    }
}

fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        Value::from(n as i64)
    } else {
        Value::from(n)
    }
}

impl Expr {
    pub fn parse(src: &str) -> Result<Expr, String> {
        if src.contains("{{") {
            return Err("`when:` takes a bare expression, without {{ }}".into());
        }
        let mut p = Parser {
            toks: lex(src)?,
            pos: 0,
        };
        let e = p.or()?;
        if p.pos != p.toks.len() {
            return Err(format!("unexpected `{}`", describe(&p.toks[p.pos])));
        }
        Ok(e)
    }

    /// Names of the variables the expression needs (not those only tested with `is defined`).
    pub fn variables(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect(&self, out: &mut Vec<String>) {
        match self {
            Expr::Var(path) => out.push(path[0].clone()),
            Expr::List(items) => items.iter().for_each(|e| e.collect(out)),
            Expr::Not(e) => e.collect(out),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Compare(a, _, b) => {
                a.collect(out);
                b.collect(out);
            }
            Expr::Literal(_) | Expr::Defined(..) => {}
        }
    }

    /// Evaluates against variables; `lookup` returns None for an undefined name.
    pub fn eval(&self, vars: &serde_json::Map<String, Value>) -> Result<Value, LangError> {
        Ok(match self {
            Expr::Literal(v) => v.clone(),
            Expr::Var(path) => {
                let var = path.join(".");
                lookup(vars, path).ok_or_else(|| LangError::Undefined {
                    message: format!("`{var}` is not defined"),
                    var,
                })?
            }
            Expr::List(items) => Value::Array(
                items
                    .iter()
                    .map(|e| e.eval(vars))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Defined(path, want) => Value::Bool(lookup(vars, path).is_some() == *want),
            Expr::Not(e) => Value::Bool(!truthy(&e.eval(vars)?)),
            Expr::And(a, b) => Value::Bool(truthy(&a.eval(vars)?) && truthy(&b.eval(vars)?)),
            Expr::Or(a, b) => Value::Bool(truthy(&a.eval(vars)?) || truthy(&b.eval(vars)?)),
            Expr::Compare(a, op, b) => Value::Bool(compare(&a.eval(vars)?, *op, &b.eval(vars)?)?),
        })
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Str(s) => format!("'{s}'"),
        Tok::Num(n) => n.to_string(),
        Tok::Ident(s) => s.clone(),
        Tok::Sym(s) => (*s).to_owned(),
    }
}

fn lookup(vars: &serde_json::Map<String, Value>, path: &[String]) -> Option<Value> {
    let mut cur = vars.get(&path[0])?;
    for key in &path[1..] {
        cur = cur.get(key)?;
    }
    Some(cur.clone())
}

pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => {
            !s.is_empty() && !matches!(s.to_ascii_lowercase().as_str(), "false" | "no" | "0")
        }
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn compare(a: &Value, op: Op, b: &Value) -> Result<bool, String> {
    let as_num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    match op {
        Op::Eq | Op::Ne => {
            let eq = match (as_num(a), as_num(b)) {
                (Some(x), Some(y)) if a.is_number() || b.is_number() => x == y,
                _ => a == b,
            };
            Ok(eq == (op == Op::Eq))
        }
        Op::In | Op::NotIn => {
            let found = match b {
                Value::Array(items) => items.iter().any(|i| compare(a, Op::Eq, i).unwrap_or(false)),
                Value::String(s) => a.as_str().is_some_and(|x| s.contains(x)),
                Value::Object(o) => a.as_str().is_some_and(|x| o.contains_key(x)),
                _ => {
                    return Err(format!(
                        "`in` needs a list or a string on its right, not {b}"
                    ));
                }
            };
            Ok(found == (op == Op::In))
        }
        _ => {
            let ord = match (as_num(a), as_num(b)) {
                (Some(x), Some(y)) => x.partial_cmp(&y),
                _ => match (a, b) {
                    (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
                    _ => None,
                },
            }
            .ok_or_else(|| format!("cannot order {a} and {b}"))?;
            Ok(match op {
                Op::Lt => ord.is_lt(),
                Op::Le => ord.is_le(),
                Op::Gt => ord.is_gt(),
                _ => ord.is_ge(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(src: &str) -> Result<bool, String> {
        let vars = json!({"k3s_role": "server", "k3s_minor": 30, "group_names": ["server", "k3s_cluster"], "node": {"zone": "a"}});
        Expr::parse(src)?
            .eval(vars.as_object().unwrap())
            .map(|v| truthy(&v))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn evaluates_the_usual_conditions() {
        assert!(eval("k3s_role == 'server'").unwrap());
        assert!(!eval("k3s_role != \"server\"").unwrap());
        assert!(eval("k3s_minor >= 25 and k3s_minor < 31").unwrap());
        assert!(eval("'server' in group_names").unwrap());
        assert!(eval("'agent' not in group_names").unwrap());
        assert!(eval("not (k3s_role == 'agent' or k3s_minor <= 24)").unwrap());
        assert!(eval("node.zone == 'a'").unwrap());
        assert!(eval("missing is not defined and k3s_role is defined").unwrap());
        assert!(eval("k3s_minor in [29, 30]").unwrap());
    }

    #[test]
    fn undefined_and_malformed_are_errors() {
        assert!(
            eval("nope == 1")
                .unwrap_err()
                .contains("`nope` is not defined")
        );
        assert!(Expr::parse("{{ x }}").is_err());
        assert!(Expr::parse("a ==").is_err());
        assert!(Expr::parse("a b").is_err());
        assert_eq!(
            Expr::parse("a == b and c").unwrap().variables(),
            ["a", "b", "c"]
        );
    }
}
