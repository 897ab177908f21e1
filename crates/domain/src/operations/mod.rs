//! The operation catalog. Each operation lives in one file holding its parameters (with
//! `deny_unknown_fields`), its compiled form, and its table-driven tests; adding an operation is
//! adding that file and naming it in [`catalog`].

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::event::Event;
use crate::pipeline::Context;

mod add_processing_info;
mod add_timestamp;

/// Every operation metastream knows, by name.
pub fn catalog() -> &'static [OperationKind] {
    static CATALOG: &[OperationKind] = &[add_timestamp::KIND, add_processing_info::KIND];
    CATALOG
}

/// Looks an operation up by its configured name.
pub fn lookup(name: &str) -> Option<&'static OperationKind> {
    catalog().iter().find(|k| k.name == name)
}

/// An entry of the catalog: how to compile an operation from its parameters.
pub struct OperationKind {
    pub name: &'static str,
    pub summary: &'static str,
    /// Compiles parameters into a runnable operation, or reports every problem found.
    pub compile: fn(&Value) -> Result<Box<dyn Operation>, Vec<ParamError>>,
}

/// A compiled operation, ready to run on events.
pub trait Operation: Send + Sync + fmt::Debug {
    /// Applies the operation to the event in place.
    ///
    /// # Errors
    /// A message saying why the operation cannot be applied to this event.
    fn apply(&self, event: &mut Event, ctx: &Context<'_>) -> Result<Effect, String>;
}

/// What the pipeline does after an operation ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Continue,
    /// The event is dropped on purpose (a filter), not an error.
    Drop,
}

/// A problem with an operation's parameters, located relative to `params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    /// e.g. `target` or `fields[0]`; empty for the params object itself.
    pub at: String,
    pub message: String,
}

impl ParamError {
    pub fn new(at: impl Into<String>, message: impl Into<String>) -> Self {
        ParamError { at: at.into(), message: message.into() }
    }
}

/// Deserializes an operation's parameters; absent parameters mean `{}`.
fn parse_params<T: DeserializeOwned>(params: &Value) -> Result<T, Vec<ParamError>> {
    let value = if params.is_null() { Value::Object(Default::default()) } else { params.clone() };
    serde_json::from_value(value).map_err(|e| vec![ParamError::new("", e.to_string())])
}

/// Parses a field path parameter, locating the error at `at`.
fn parse_path(text: &str, at: &str) -> Result<crate::path::FieldPath, Vec<ParamError>> {
    crate::path::FieldPath::parse(text).map_err(|e| vec![ParamError::new(at, e.0)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = catalog().iter().map(|k| k.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), catalog().len());
    }
}

/// Helpers for the operations' table-driven tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::pipeline::Stage;
    use chrono::TimeZone;

    pub fn event(payload: Value) -> Event {
        Event::from_client_value(serde_json::json!({"id":"1","source":"s","payload":payload})).unwrap()
    }

    pub fn context() -> Context<'static> {
        let now = chrono::Utc.with_ymd_and_hms(2024, 7, 20, 12, 34, 56).unwrap()
            + chrono::Duration::milliseconds(789);
        Context { stage: Stage::Post, service: "test", instance: "i-1", version: "0.0.0", config_version: 7, now }
    }

    /// Compiles `params` and applies the operation to `event`.
    pub fn run(
        compile: &dyn Fn(&Value) -> Result<Box<dyn Operation>, Vec<ParamError>>,
        params: &Value,
        mut event: Event,
    ) -> Result<Event, String> {
        let op = compile(params).map_err(|e| format!("{e:?}"))?;
        op.apply(&mut event, &context())?;
        Ok(event)
    }
}
