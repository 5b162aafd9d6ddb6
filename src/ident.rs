//! SQL identifiers from job files: checked once when the job is loaded, always quoted when used.
//!
//! Job files name tables and columns, and those names end up inside SQL text (values never do:
//! they are bound). So a name must be a plain identifier: letters, digits and underscores, not
//! starting with a digit, at most 63 bytes (PostgreSQL's limit). Anything else (quotes,
//! semicolons, spaces, comments) is rejected before any SQL is built, and what passes is still
//! double-quoted so reserved words and mixed case work.

use std::fmt;

/// A checked column or table name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    pub fn parse(name: &str) -> Result<Self, String> {
        let mut chars = name.chars();
        let starts_well = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !starts_well || !rest_ok {
            return Err(format!(
                "`{name}` is not a valid SQL name: use letters, digits and underscores, not starting with a digit"
            ));
        }
        if name.len() > 63 {
            return Err(format!("`{name}` is longer than 63 bytes"));
        }
        Ok(Ident(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as it goes into SQL text.
    pub fn quoted(&self) -> String {
        // Parsing admits no `"`, so there is nothing to escape.
        format!("\"{}\"", self.0)
    }

    /// The name as it goes into MySQL's SQL text, which takes `"` for strings (parsing admits
    /// no backtick either).
    pub fn backticked(&self) -> String {
        format!("`{}`", self.0)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A table name, optionally qualified by its schema (`analytics.predictions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<Ident>,
    pub name: Ident,
}

impl TableName {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once('.') {
            None => Ok(TableName {
                schema: None,
                name: Ident::parse(text)?,
            }),
            Some((schema, name)) => Ok(TableName {
                schema: Some(Ident::parse(schema)?),
                name: Ident::parse(name)?,
            }),
        }
    }

    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", schema.quoted(), self.name.quoted()),
            None => self.name.quoted(),
        }
    }

    /// [`TableName::quoted`] for MySQL, where the schema is the database.
    pub fn backticked(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", schema.backticked(), self.name.backticked()),
            None => self.name.backticked(),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_and_are_quoted() {
        assert_eq!(
            Ident::parse("reading_id").unwrap().quoted(),
            "\"reading_id\""
        );
        assert_eq!(Ident::parse("_Temp2").unwrap().as_str(), "_Temp2");
        assert_eq!(
            TableName::parse("analytics.scores").unwrap().quoted(),
            "\"analytics\".\"scores\""
        );
    }

    #[test]
    fn hostile_names_are_rejected() {
        for bad in [
            "",
            "1st",
            "a b",
            "x\"; DROP TABLE t; --",
            "name--",
            "a;b",
            "a'b",
            "a/*c*/",
            "é",
            "a.b.c",
        ] {
            assert!(TableName::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Ident::parse(&"a".repeat(64)).is_err());
        assert!(Ident::parse("t.x").is_err());
    }
}
