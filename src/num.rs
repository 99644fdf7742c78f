//! Counter arithmetic. Usage counters must never wrap or silently lose precision, so
//! integers are summed as `i128` and checked on the way back to JSON, and floats are only
//! accepted where they can be counted exactly enough (cost in dollars, not token counts
//! that overflowed a 64-bit integer and were parsed as a float).

use serde_json::{Number, Value};

/// A JSON number as a counter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    Int(i128),
    Float(f64),
}

/// Why a number cannot be used as a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumProblem {
    /// The literal was an integer beyond 64 bits (serde_json parsed it as a float), or a
    /// float too large to add exactly.
    TooLarge,
    /// The result of the arithmetic does not fit a 64-bit integer.
    Overflow,
}

/// Floats at or beyond 2^53 can no longer represent every integer: a counter there is
/// almost certainly an integer literal that overflowed u64.
const EXACT_FLOAT_LIMIT: f64 = 9_007_199_254_740_992.0;

impl Num {
    pub const ZERO: Num = Num::Int(0);

    /// Reads a JSON value as a counter; `None` when it is not a number.
    pub fn from_value(v: &Value) -> Option<Result<Num, NumProblem>> {
        let Value::Number(n) = v else { return None };
        Some(Self::from_number(n))
    }

    pub fn from_number(n: &Number) -> Result<Num, NumProblem> {
        if let Some(i) = n.as_i64() {
            Ok(Num::Int(i128::from(i)))
        } else if let Some(u) = n.as_u64() {
            Ok(Num::Int(i128::from(u)))
        } else {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if !f.is_finite() || f.abs() >= EXACT_FLOAT_LIMIT {
                Err(NumProblem::TooLarge)
            } else {
                Ok(Num::Float(f))
            }
        }
    }

    pub fn is_zero(self) -> bool {
        match self {
            Num::Int(i) => i == 0,
            Num::Float(f) => f == 0.0,
        }
    }

    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    pub fn plus(self, other: Num) -> Result<Num, NumProblem> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a.checked_add(b).map(Num::Int).ok_or(NumProblem::Overflow),
            (a, b) => Ok(Num::Float(a.as_f64() + b.as_f64())),
        }
    }

    pub fn negated(self) -> Num {
        match self {
            Num::Int(i) => Num::Int(-i),
            Num::Float(f) => Num::Float(-f),
        }
    }

    pub fn minus(self, other: Num) -> Result<Num, NumProblem> {
        self.plus(other.negated())
    }

    /// Back to JSON: integers must fit i64 or u64.
    pub fn to_value(self) -> Result<Value, NumProblem> {
        match self {
            Num::Int(i) => {
                if let Ok(v) = i64::try_from(i) {
                    Ok(Value::from(v))
                } else if let Ok(v) = u64::try_from(i) {
                    Ok(Value::from(v))
                } else {
                    Err(NumProblem::Overflow)
                }
            }
            Num::Float(f) => Number::from_f64(f).map(Value::Number).ok_or(NumProblem::Overflow),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_past_u64_are_refused_not_rounded() {
        let v: Value = serde_json::from_str("18446744073709551616").unwrap();
        assert_eq!(Num::from_value(&v), Some(Err(NumProblem::TooLarge)));
        let max = Num::Int(i128::from(u64::MAX));
        assert_eq!(max.plus(Num::Int(1)).unwrap().to_value(), Err(NumProblem::Overflow));
        assert_eq!(max.to_value().unwrap(), serde_json::json!(u64::MAX));
    }

    #[test]
    fn mixed_int_and_float_sum_as_float() {
        assert_eq!(Num::Int(1).plus(Num::Float(0.5)).unwrap(), Num::Float(1.5));
    }
}
