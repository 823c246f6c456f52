//! A bound on the operators of one statement, checked on its tokens before
//! it is parsed. A chain of `a OR b OR ...` or `1 + 1 + ...` parses into a
//! tree as deep as the chain is long, and the query engine walks (prints,
//! compares, drops) such trees by recursion: a few hundred levels overflowed
//! a thread's stack and took the whole server down, for every tenant. The
//! tokenizer is a loop, so counting costs no stack whatever the input.
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// The most operators one statement (or erasure predicate) may hold. The
/// server's threads have stacks for several times this depth (see
/// `bulkhead serve`'s runtime).
pub const MAX_OPERATORS: usize = 1_000;

/// Refuses `sql` when it holds more than [`MAX_OPERATORS`] operators; the
/// error names the count and the bound. Text the tokenizer cannot read is
/// let through, for the parser to name what is wrong with it.
pub fn check_operators(sql: &str) -> Result<(), String> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let n = tokens.iter().filter(|t| is_operator(t)).count();
    if n > MAX_OPERATORS {
        return Err(format!(
            "the statement holds {n} operators (AND, OR, NOT, comparisons, arithmetic, UNION, JOIN, ...); at most {MAX_OPERATORS} are taken in one statement: a list such as `x IN ('a', 'b', ...)` says the same as many ORs with one operator"
        ));
    }
    Ok(())
}

fn is_operator(token: &Token) -> bool {
    match token {
        Token::Word(w) => matches!(
            w.keyword,
            Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::XOR
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::IS
                | Keyword::BETWEEN
                // set operations and joins nest one level a branch, and
                // the planner's work grows faster than their number (a
                // 3,000-branch UNION ALL was planned for 45 s, past the
                // query's time limit, which only execution can be cut at)
                | Keyword::UNION
                | Keyword::INTERSECT
                | Keyword::EXCEPT
                | Keyword::MINUS
                | Keyword::JOIN
        ),
        Token::DoubleEq
        | Token::Eq
        | Token::Neq
        | Token::Lt
        | Token::Gt
        | Token::LtEq
        | Token::GtEq
        | Token::Spaceship
        | Token::Plus
        | Token::Minus
        | Token::Mul
        | Token::Div
        | Token::DuckIntDiv
        | Token::Mod
        | Token::StringConcat
        | Token::Ampersand
        | Token::Pipe
        | Token::Caret
        | Token::ShiftLeft
        | Token::ShiftRight
        | Token::DoubleColon
        | Token::Tilde
        | Token::TildeAsterisk
        | Token::ExclamationMarkTilde
        | Token::ExclamationMarkTildeAsterisk
        | Token::DoubleTilde
        | Token::DoubleTildeAsterisk
        | Token::ExclamationMarkDoubleTilde
        | Token::ExclamationMarkDoubleTildeAsterisk
        | Token::Arrow
        | Token::LongArrow
        | Token::AtArrow
        | Token::ArrowAt
        | Token::CustomBinaryOperator(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_operators_not_literals() {
        // operators inside string literals and comments are not counted
        let quoted = format!("SELECT '{}' -- {}", "+".repeat(5_000), "OR ".repeat(5_000));
        assert!(check_operators(&quoted).is_ok());
        let ors = (0..400)
            .map(|i| format!("body = 'v{i}'"))
            .collect::<Vec<_>>()
            .join(" OR ");
        assert!(check_operators(&format!("SELECT * FROM logs WHERE {ors}")).is_ok());
        let plus = format!("SELECT {}", vec!["1"; 1_002].join(" + "));
        let e = check_operators(&plus).unwrap_err();
        assert!(
            e.contains("1001 operators") && e.contains("at most 1000"),
            "{e}"
        );
        let ands = (0..600)
            .map(|i| format!("a = {i}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        assert!(check_operators(&ands)
            .unwrap_err()
            .contains("1199 operators"));
        let union = vec!["SELECT 1"; 1_002].join(" UNION ALL ");
        assert!(check_operators(&union)
            .unwrap_err()
            .contains("1001 operators"));
        let joins = format!(
            "SELECT 1 FROM logs a {}",
            (0..1_001)
                .map(|i| format!("JOIN logs t{i} USING (trace_id)"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert!(check_operators(&joins)
            .unwrap_err()
            .contains("1001 operators"));
        // unreadable text is left to the parser
        assert!(check_operators("SELECT 'unterminated").is_ok());
    }
}
