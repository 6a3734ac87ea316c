//! Money: exact decimal amounts as operators write them (a TOML string, never a float)
//! and the one rounding rule invoices use. No binary float touches money.

use std::fmt;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

/// An exact amount, written in TOML as a string (`"0.50"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price(pub Decimal);

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Price;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a decimal string like \"0.50\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Price, E> {
                let v = Decimal::from_str_exact(s.trim())
                    .map_err(|e| E::custom(format!("{s:?} is not a decimal amount ({e})")))?;
                if v.is_sign_negative() && !v.is_zero() {
                    return Err(E::custom(format!("{s:?} is negative")));
                }
                within_limits(v).map_err(E::custom)?;
                Ok(Price(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Price, E> {
                Err(E::custom(format!("write prices as strings, like \"{v}\": a TOML float is not exact")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Price, E> {
                Err(E::custom(format!("write prices as strings, like \"{v}\"")))
            }
        }
        d.deserialize_any(V)
    }
}

/// The largest amount an operator or an event may write, and its most decimals: sums of
/// any number of them stay far inside what an exact decimal holds.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(2_764_472_320, 232_830, 0, false, 0); // 1e15
pub const MAX_DECIMALS: u32 = 8;

/// Whether `d` is within [`MAX_AMOUNT`] and [`MAX_DECIMALS`]; why not if it is not.
pub fn within_limits(d: Decimal) -> Result<(), String> {
    if d.abs() > MAX_AMOUNT {
        return Err(format!("{d} is over the largest amount, {MAX_AMOUNT}"));
    }
    if d.scale() > MAX_DECIMALS {
        return Err(format!("{d} has {} decimals; at most {MAX_DECIMALS}", d.scale()));
    }
    Ok(())
}

/// Rounds to the currency's minor unit, half to even (SPEC 8.4), and writes it with
/// exactly that many decimals: 2, but none for the currencies without a minor unit and
/// 3 for those with thousandths.
pub fn round_minor(amount: Decimal, currency: &str) -> Decimal {
    let places = minor_places(currency);
    let mut d = amount.round_dp_with_strategy(places, RoundingStrategy::MidpointNearestEven);
    d.rescale(places);
    d
}

/// `amount` written with at least the currency's minor unit (`0` as `0.00`), nothing cut.
pub fn with_minor(mut amount: Decimal, currency: &str) -> Decimal {
    let places = minor_places(currency);
    if amount.scale() < places {
        amount.rescale(places);
    }
    amount
}

fn minor_places(currency: &str) -> u32 {
    match currency {
        "JPY" | "KRW" | "VND" | "CLP" | "ISK" | "UGX" | "XAF" | "XOF" | "PYG" | "RWF" => 0,
        "BHD" | "JOD" | "KWD" | "OMR" | "TND" | "IQD" | "LYD" => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_half_to_even_at_the_minor_unit() {
        let d = |s: &str| Decimal::from_str_exact(s).unwrap();
        assert_eq!(round_minor(d("40.505"), "USD").to_string(), "40.50");
        assert_eq!(round_minor(d("40.515"), "USD").to_string(), "40.52");
        assert_eq!(round_minor(d("-1.125"), "USD").to_string(), "-1.12");
        assert_eq!(round_minor(d("2.5"), "JPY").to_string(), "2");
        assert_eq!(round_minor(d("0.0005"), "KWD").to_string(), "0.000");
        assert_eq!(round_minor(d("7"), "USD").to_string(), "7.00");
        assert_eq!(with_minor(d("0"), "USD").to_string(), "0.00");
        assert_eq!(with_minor(d("0.125"), "USD").to_string(), "0.125");
        assert_eq!(MAX_AMOUNT.to_string(), "1000000000000000");
        assert!(within_limits(d("999999999999999.99999999")).is_ok());
        assert!(within_limits(d("1000000000000000.01")).unwrap_err().contains("largest"));
        assert!(within_limits(d("0.000000001")).unwrap_err().contains("decimals"));
    }
}
