//! Prices: operator-edited data beside the rules (`rules/prices.toml`), per outcome:
//! a currency, a price per tier, and per-tenant overrides (a flat price, or other tiers).
//! Amounts are exact decimal strings; a TOML float is refused.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;
use serde::Deserialize;

pub use crate::money::Price;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeFile {
    currency: String,
    tiers: BTreeMap<String, Price>,
    #[serde(default)]
    tenants: BTreeMap<String, TenantFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantFile {
    flat: Option<Price>,
    #[serde(default)]
    tiers: BTreeMap<String, Price>,
}

/// Prices of one outcome.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutcomePrices {
    pub currency: String,
    pub tiers: BTreeMap<u8, Decimal>,
    pub tenants: HashMap<String, TenantPrices>,
}

/// A tenant's override: `flat` wins over `tiers`, which win over the defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TenantPrices {
    pub flat: Option<Decimal>,
    pub tiers: BTreeMap<u8, Decimal>,
}

impl OutcomePrices {
    /// The price of `tier` for `tenant`, if one is set.
    pub fn price(&self, tenant: &str, tier: u8) -> Option<Decimal> {
        if let Some(t) = self.tenants.get(tenant) {
            if let Some(flat) = t.flat {
                return Some(flat);
            }
            if let Some(p) = t.tiers.get(&tier) {
                return Some(*p);
            }
        }
        self.tiers.get(&tier).copied()
    }
}

/// All prices, by outcome name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PriceBook {
    pub outcomes: HashMap<String, OutcomePrices>,
}

/// Why a price file was refused.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PriceError {
    pub line: Option<usize>,
    pub message: String,
}

fn tier_key(k: &str, at: &str) -> Result<u8, PriceError> {
    k.parse::<u8>()
        .ok()
        .filter(|t| *t >= 1)
        .ok_or_else(|| PriceError { line: None, message: format!("{at}: tier {k:?} is not a number from 1 to 255") })
}

impl PriceBook {
    /// Parses the text of a prices file.
    pub fn parse(text: &str) -> Result<PriceBook, PriceError> {
        let raw: BTreeMap<String, OutcomeFile> = toml::from_str(text)
            .map_err(|e| PriceError { line: super::toml_error_line(text, &e), message: e.message().to_string() })?;
        let mut book = PriceBook::default();
        for (name, o) in raw {
            if o.currency.len() != 3 || !o.currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(PriceError {
                    line: None,
                    message: format!("[{name}]: currency {:?} is not an ISO 4217 code like \"USD\"", o.currency),
                });
            }
            let mut tiers = BTreeMap::new();
            for (k, p) in &o.tiers {
                tiers.insert(tier_key(k, &format!("[{name}.tiers]"))?, p.0);
            }
            let mut tenants = HashMap::new();
            for (t, tp) in o.tenants {
                let mut ttiers = BTreeMap::new();
                for (k, p) in &tp.tiers {
                    ttiers.insert(tier_key(k, &format!("[{name}.tenants.{t}.tiers]"))?, p.0);
                }
                tenants.insert(t, TenantPrices { flat: tp.flat.map(|p| p.0), tiers: ttiers });
            }
            book.outcomes.insert(name, OutcomePrices { currency: o.currency, tiers, tenants });
        }
        Ok(book)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
[ai_resolution]
currency = "USD"
tiers = { 1 = "0.50", 2 = "1.50", 3 = "3.00" }

[ai_resolution.tenants.acme]
flat = "0.99"

[ai_resolution.tenants.globex]
tiers = { 2 = "1.25" }
"#;

    #[test]
    fn lookups_with_overrides() {
        let b = PriceBook::parse(SAMPLE).unwrap();
        let p = &b.outcomes["ai_resolution"];
        assert_eq!(p.price("other", 1).unwrap().to_string(), "0.50");
        assert_eq!(p.price("acme", 3).unwrap().to_string(), "0.99");
        assert_eq!(p.price("globex", 2).unwrap().to_string(), "1.25");
        assert_eq!(p.price("globex", 3).unwrap().to_string(), "3.00");
        assert_eq!(p.price("other", 4), None);
    }

    #[test]
    fn refuses_floats_and_typos() {
        let e = PriceBook::parse("[a]\ncurrency = \"USD\"\ntiers = { 1 = 0.5 }\n").unwrap_err();
        assert!(e.message.contains("not exact"), "{}", e.message);
        assert_eq!(e.line, Some(3));
        let e = PriceBook::parse("[a]\ncurrency = \"USD\"\ntier = { 1 = \"0.5\" }\n").unwrap_err();
        assert!(e.message.contains("unknown field"), "{}", e.message);
        let e = PriceBook::parse("[a]\ncurrency = \"usd\"\ntiers = {}\n").unwrap_err();
        assert!(e.message.contains("ISO 4217"));
        let e = PriceBook::parse("[a]\ncurrency = \"USD\"\ntiers = { x = \"1\" }\n").unwrap_err();
        assert!(e.message.contains("tier \"x\""));
        let e = PriceBook::parse("[a]\ncurrency = \"USD\"\ntiers = { 1 = \"-1\" }\n").unwrap_err();
        assert!(e.message.contains("negative"));
    }
}
