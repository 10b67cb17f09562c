//! YAML 1.1 as Ansible reads it, for the arguments of tasks and modules:
//! booleans spelt `yes`/`on`/`y`, and mappings that keep their order and
//! refuse duplicate keys.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// A mapping that keeps the order of its keys as written, and refuses
/// duplicate keys (which YAML would otherwise silently collapse).
#[derive(Debug, Clone, PartialEq)]
pub struct Ordered<V>(pub Vec<(String, V)>);

impl<V> Default for Ordered<V> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<V> Ordered<V> {
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for OrderedVisitor<V> {
            type Value = Ordered<V>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Ordered(Vec::new()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(String, V)> = Vec::new();
                // A set beside the list: a 40,000-host group stays linear.
                let mut seen = std::collections::HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(de::Error::custom(format!("duplicate key `{key}`")));
                    }
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(Ordered(entries))
            }
        }

        deserializer.deserialize_any(OrderedVisitor(PhantomData))
    }
}

/// A boolean as Ansible reads YAML (1.1): `true`/`false`, and `yes`/`no`,
/// `on`/`off`, `y`/`n` in any case, where a boolean is expected.
pub fn bool11<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    // A visitor, so that an error points at the value's own line.
    struct Bool11;
    impl serde::de::Visitor<'_> for Bool11 {
        type Value = bool;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a boolean (true/false, yes/no, on/off)")
        }

        fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<bool, E> {
            Ok(b)
        }

        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<bool, E> {
            match s.to_ascii_lowercase().as_str() {
                "yes" | "y" | "on" | "true" => Ok(true),
                "no" | "n" | "off" | "false" => Ok(false),
                _ => Err(E::invalid_value(serde::de::Unexpected::Str(s), &self)),
            }
        }
    }
    d.deserialize_any(Bool11)
}

/// [`bool11`] for an optional field.
pub fn opt_bool11<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    bool11(d).map(Some)
}
