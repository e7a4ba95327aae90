//! The one expression builder: an update (`SET`, `REMOVE`, `ADD`) and a condition, with their
//! placeholders. Every attribute goes through a `#name` placeholder (`status`, `raw`… are
//! reserved words), and a value is registered only when used, because DynamoDB rejects unused
//! placeholders and empty placeholder maps.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::item::{n, s};

#[derive(Debug, Default, Clone)]
pub struct Expr {
    set: Vec<String>,
    remove: Vec<String>,
    add: Vec<String>,
    condition: Option<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    /// What each `SET` assigns where the item has nothing yet (see [`Expr::created_item`]).
    assigned: Vec<(String, AttributeValue)>,
    /// A `REMOVE`, `ADD` or list append: the update is more than assignments.
    not_only_sets: bool,
}

/// An [`Expr`] as the SDK's builders take it.
#[derive(Debug)]
pub struct Parts {
    /// `None` when nothing is set, removed or added (a `Put` or `Delete` condition only).
    pub update: Option<String>,
    pub condition: Option<String>,
    pub names: Option<HashMap<String, String>>,
    pub values: Option<HashMap<String, AttributeValue>>,
}

impl Expr {
    pub fn new() -> Self {
        Self::default()
    }

    /// The placeholder of attribute `attr`.
    pub fn name(&mut self, attr: &str) -> String {
        let placeholder = format!("#{attr}");
        self.names.insert(placeholder.clone(), attr.to_owned());
        placeholder
    }

    /// Registers `value` as `:key`.
    pub fn value(&mut self, key: &str, value: AttributeValue) -> String {
        let placeholder = format!(":{key}");
        debug_assert!(
            self.values
                .get(&placeholder)
                .is_none_or(|earlier| *earlier == value),
            "{placeholder} registered twice with different values"
        );
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    pub fn set(&mut self, attr: &str, value: AttributeValue) -> &mut Self {
        self.assigned.push((attr.to_owned(), value.clone()));
        let name = self.name(attr);
        let value = self.value(attr, value);
        self.set.push(format!("{name} = {value}"));
        self
    }

    /// Sets a string attribute when there is a value; leaves it alone otherwise.
    pub fn set_some(&mut self, attr: &str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.set(attr, s(value));
        }
        self
    }

    /// Sets `attr` only if the item has no value for it yet.
    pub fn set_if_absent(&mut self, attr: &str, value: AttributeValue) -> &mut Self {
        self.assigned.push((attr.to_owned(), value.clone()));
        let name = self.name(attr);
        let value = self.value(attr, value);
        self.set
            .push(format!("{name} = if_not_exists({name}, {value})"));
        self
    }

    /// Appends `entries` to the list `attr`, creating it if absent.
    pub fn append(&mut self, attr: &str, entries: Vec<AttributeValue>) -> &mut Self {
        self.not_only_sets = true;
        let name = self.name(attr);
        let empty = self.value(&format!("{attr}_empty"), AttributeValue::L(Vec::new()));
        let entries = self.value(&format!("{attr}_new"), AttributeValue::L(entries));
        self.set.push(format!(
            "{name} = list_append(if_not_exists({name}, {empty}), {entries})"
        ));
        self
    }

    pub fn remove(&mut self, attr: &str) -> &mut Self {
        self.not_only_sets = true;
        let name = self.name(attr);
        self.remove.push(name);
        self
    }

    pub fn add(&mut self, attr: &str, by: u32) -> &mut Self {
        self.not_only_sets = true;
        let name = self.name(attr);
        let value = self.value(&format!("add_{attr}"), n(by));
        self.add.push(format!("{name} {value}"));
        self
    }

    /// The write's condition; replaces any earlier one.
    pub fn condition(&mut self, condition: impl Into<String>) -> &mut Self {
        self.condition = Some(condition.into());
        self
    }

    /// `attribute_not_exists(attr)`: the item is new.
    pub fn absent(&mut self, attr: &str) -> String {
        format!("attribute_not_exists({})", self.name(attr))
    }

    /// `attr = value`.
    pub fn equals(&mut self, attr: &str, key: &str, value: AttributeValue) -> String {
        let name = self.name(attr);
        let value = self.value(key, value);
        format!("{name} = {value}")
    }

    /// The item this update creates where there is none, when it only assigns (`SET`, an
    /// `if_not_exists` one included): what a conditional `PutItem` of a new item writes. The
    /// last assignment of an attribute wins, as in one `SET`.
    pub fn created_item(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.not_only_sets).then(|| self.assigned.iter().cloned().collect())
    }

    /// Whether the update would change nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty() && self.add.is_empty()
    }

    pub fn finish(self) -> Parts {
        let clauses = [
            ("SET", &self.set),
            ("REMOVE", &self.remove),
            ("ADD", &self.add),
        ];
        let update = clauses
            .iter()
            .filter(|(_, parts)| !parts.is_empty())
            .map(|(keyword, parts)| format!("{keyword} {}", parts.join(", ")))
            .collect::<Vec<_>>()
            .join(" ");
        Parts {
            update: Some(update).filter(|u| !u.is_empty()),
            condition: self.condition,
            names: Some(self.names).filter(|m| !m.is_empty()),
            values: Some(self.values).filter(|m| !m.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_update_of_assignments_only_is_the_item_it_creates() {
        use super::Expr;
        use crate::item::s;
        let mut only_sets = Expr::new();
        only_sets.set("status", s("PENDING"));
        only_sets.set_if_absent("callback_nonce", s("n1"));
        only_sets.set_some("created_by", None);
        let created = only_sets.created_item().expect("assignments only");
        assert_eq!(created.len(), 2);
        assert_eq!(created["status"], s("PENDING"));
        assert_eq!(created["callback_nonce"], s("n1"));
        let mut more = only_sets.clone();
        more.add("query_attempts", 1);
        assert_eq!(more.created_item(), None);
        let mut removes = only_sets;
        removes.remove("orphan_pk");
        assert_eq!(removes.created_item(), None);
    }

    use super::*;

    #[test]
    fn clauses_and_placeholders_are_registered_once_each() {
        let mut expr = Expr::new();
        expr.set("status", s("PENDING"))
            .remove("pending_pk")
            .add("query_attempts", 1);
        let open = expr.equals("status", "open", s("PENDING"));
        expr.condition(open);
        let parts = expr.finish();
        assert_eq!(
            parts.update.as_deref(),
            Some(
                "SET #status = :status REMOVE #pending_pk ADD #query_attempts :add_query_attempts"
            )
        );
        assert_eq!(parts.condition.as_deref(), Some("#status = :open"));
        assert_eq!(parts.names.unwrap().len(), 3);
        assert_eq!(parts.values.unwrap().len(), 3);
    }

    #[test]
    fn a_condition_alone_has_no_update_and_no_values() {
        let mut expr = Expr::new();
        let absent = expr.absent("pk");
        expr.condition(absent);
        let parts = expr.finish();
        assert_eq!(parts.update, None);
        assert_eq!(parts.values, None);
        assert_eq!(
            parts.condition.as_deref(),
            Some("attribute_not_exists(#pk)")
        );
    }
}
